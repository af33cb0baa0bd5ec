#!/usr/bin/env bash
# Debian's headless Chromium for the web console's browser tests: Playwright drives
# /usr/bin/chromium (its own browser download is not used). Idempotent, and silent when Chromium
# is already there. Where it cannot be installed (no apt-get, no root or sudo) it says so and
# exits 0: the browser tests are then skipped, except in CI, where they fail.
set -euo pipefail

[ -x /usr/bin/chromium ] && exit 0

say() { printf '[serval] %s\n' "$*" >&2; }
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        say "chromium is missing and this user cannot install it: the browser tests will not run"
        exit 0
    fi
    sudo="sudo"
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "chromium is missing and apt-get is not here: install it at /usr/bin/chromium by hand"
    exit 0
fi
say "installing Debian's chromium for the browser tests"
log="$(mktemp)"
if ! { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
} >"$log" 2>&1; then
    cat "$log" >&2
    say "installing chromium failed (the log above says why): the browser tests will not run"
fi
rm -f "$log"
