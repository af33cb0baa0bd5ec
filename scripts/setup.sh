#!/usr/bin/env bash
# Shared set-up for start.sh and test.sh: a virtual environment with the right extras and the
# default model. Idempotent and quiet when there is nothing to do. Usage: scripts/setup.sh [extra...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
say() { printf '[serval] %s\n' "$*" >&2; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1))."
    exit 1
fi

gpu=""
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    gpu=1
    extras="exl2,exl3"
else
    extras="cpu"
fi
extras="$extras,convert"
for extra in "$@"; do extras="$extras,$extra"; done

# A venv whose creation was interrupted has a python but no pip: make it again.
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    say "$VENV is incomplete (no pip): creating it again"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# The stamp holds a digest of what decides the install and the extras installed with it, so
# start.sh (runtime extras) and test.sh (plus dev) after one another install nothing again.
stamp="$VENV/.serval-installed"
digest="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
installed=""
if [ -f "$stamp" ]; then
    read -r stamp_digest installed <"$stamp" || true
    [ "$stamp_digest" = "$digest" ] || installed=""
fi
missing=""
for extra in ${extras//,/ }; do
    case ",$installed," in *",$extra,"*) ;; *) missing=1 ;; esac
done
if [ -n "$missing" ]; then
    extras="$(printf '%s,%s' "$extras" "$installed" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
    log="$VENV/.serval-install.log"
    pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" >"$log" 2>&1; }
    # With an NVIDIA driver: a CUDA torch for which the ExLlama engines publish prebuilt wheels
    # first (no CUDA toolkit needed), unless the venv has a CUDA torch already.
    if [ -n "$gpu" ] && ! "$VENV/bin/python" -c 'import sys, torch; sys.exit(not torch.version.cuda)' 2>/dev/null; then
        if torch_args="$("$VENV/bin/python" scripts/gpu_packages.py torch)"; then
            say "installing $torch_args"
            # shellcheck disable=SC2086  # torch_args holds several pip arguments
            if ! pip_install $torch_args; then
                cat "$log" >&2
                say "installing torch failed; the log above says why"
                exit 1
            fi
        fi
    fi
    say "installing Serval with extras [$extras] (first run takes a few minutes)"
    if ! pip_install ".[$extras]"; then
        cat "$log" >&2
        say "installation failed; the log above says why"
        exit 1
    fi
    if [ -n "$gpu" ]; then
        # Prebuilt wheels over the PyPI ones, which would compile on first use; each line it
        # prints on stderr says what is missing where no wheel fits.
        for url in $("$VENV/bin/python" scripts/gpu_packages.py wheels); do
            say "installing the prebuilt ${url##*/}"
            if ! pip_install --no-deps --force-reinstall "$url"; then
                say "could not install ${url##*/} ($(tail -n 1 "$log")); it compiles on first use instead"
            fi
        done
    fi
    case ",$extras," in *,dev,*)
        # The CPU tests run exllamav2's Python code over a stub of its CUDA extension; of its
        # declared dependencies they need none that Serval lacks (pandas and fastparquet are
        # for quantising), so the pinned wheel from the exl2 extra is added without them.
        exl2="$(grep -o '"exllamav2==[^"]*"' pyproject.toml | head -n 1 | tr -d '"')"
        if ! pip_install --no-deps "$exl2"; then
            cat "$log" >&2
            say "installing $exl2 failed; the log above says why"
            exit 1
        fi
        ;;
    esac
    echo "$digest $extras" >"$stamp"
fi

"$VENV/bin/python" scripts/fetch_default_model.py
