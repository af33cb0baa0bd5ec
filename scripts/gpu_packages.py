"""Which prebuilt CUDA wheels of exllamav2, exllamav3 and flash-attn fit this machine.

scripts/setup.sh calls it on a machine with an NVIDIA driver, so that a first start needs no CUDA
toolkit: the three libraries publish wheels on their GitHub releases, one per CUDA build, torch
version, Python version and platform (the build matrices are in docs/exllama.md, "Prebuilt
wheels"). A wheel's compiled extension loads only into the torch minor version it was built
against, with the same CUDA major version, on the same Python and platform. Without a fitting
wheel the PyPI packages compile their extension on first import, which needs ``nvcc`` of
torch's CUDA major version; the messages here say in one line what is missing and how to fix it.

    python scripts/gpu_packages.py torch    pip arguments for a CUDA torch that has the wheels
    python scripts/gpu_packages.py wheels   URLs of the wheels that fit the installed torch

Both print what to install on stdout and one line per finding on stderr.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

Version = tuple[int, ...]
TORCH_INDEX = "https://download.pytorch.org/whl/cu{cuda}"
# PyTorch publishes no CUDA 13.2 build; the CUDA 13.2 wheels run on its CUDA 13.0 build.
TORCH_CUDA_BUILD = {"132": "130"}


def version(text: str) -> Version:
    """``"2.8.0+cu128"`` -> ``(2, 8, 0)``."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


@dataclass(frozen=True)
class Build:
    """One published build: CUDA ``cuda`` ("128" for 12.8), torch ``torch``, these Pythons."""

    cuda: str
    torch: str
    pythons: tuple[str, ...]

    @property
    def cuda_version(self) -> Version:
        return int(self.cuda[:-1]), int(self.cuda[-1])


@dataclass(frozen=True)
class Release:
    """A library's release and the wheels it publishes."""

    package: str
    version: str
    url: str  # a format string over version, cuda, torch, py (cp tag digits), platform, abi
    platforms: tuple[str, ...]
    builds: tuple[Build, ...]
    torch_tag: str = "full"  # "full": 2.8.0 in the name; "minor": 2.8
    cuda_tag: str = "full"  # "full": cu128 in the name; "major": cu12

    def wheel_url(self, build: Build, python: str, platform_tag: str, abi: bool) -> str:
        torch = build.torch if self.torch_tag == "full" else ".".join(build.torch.split(".")[:2])
        cuda = build.cuda if self.cuda_tag == "full" else build.cuda[:-1]
        return self.url.format(
            version=self.version,
            cuda=cuda,
            torch=torch,
            py=python.replace(".", ""),
            platform=platform_tag,
            abi="TRUE" if abi else "FALSE",
        )


def builds(cuda: str, torches: Iterable[str], pythons: Iterable[str]) -> tuple[Build, ...]:
    return tuple(Build(cuda, torch, tuple(pythons)) for torch in torches)


def exllama_release(package: str, version: str, builds: tuple[Build, ...]) -> Release:
    """An ExLlama (v2 or v3) release: turboderp-org's wheels for Linux and Windows, named alike."""
    return Release(
        package=package,
        version=version,
        # The doubled braces stay as fields, filled for each wheel.
        url=f"https://github.com/turboderp-org/{package}/releases/download/v{{version}}/"
        f"{package}-{{version}}+cu{{cuda}}.torch{{torch}}-cp{{py}}-cp{{py}}-{{platform}}.whl",
        platforms=("linux_x86_64", "win_amd64"),
        builds=builds,
    )


PY310_313 = ("3.10", "3.11", "3.12", "3.13")
EXLLAMAV2 = exllama_release(
    "exllamav2",
    "0.3.2",
    (
        *builds("118", ("2.3.1", "2.4.0"), PY310_313[:3]),
        *builds("121", ("2.3.1", "2.4.0"), PY310_313[:3]),
        *builds("118", ("2.5.0", "2.6.0"), PY310_313),
        *builds("121", ("2.5.0",), PY310_313),
        *builds("124", ("2.6.0",), PY310_313),
        *builds("128", ("2.7.0", "2.8.0", "2.9.0"), PY310_313),
    ),
)
EXLLAMAV3 = exllama_release(
    "exllamav3",
    "1.6.5",
    (
        *builds("128", ("2.7.0", "2.8.0"), PY310_313),
        *builds("128", ("2.9.0", "2.10.0"), (*PY310_313, "3.14")),
        *builds("128", ("2.11.0",), ("3.12", "3.13", "3.14")),
        *builds("132", ("2.11.0",), ("3.12", "3.13", "3.14")),
    ),
)
FLASH_ATTN = Release(
    package="flash-attn",
    version="2.8.3",
    url="https://github.com/Dao-AILab/flash-attention/releases/download/v{version}/"
    "flash_attn-{version}+cu{cuda}torch{torch}cxx11abi{abi}-cp{py}-cp{py}-{platform}.whl",
    platforms=("linux_x86_64",),
    builds=(
        *builds("129", ("2.4.0",), ("3.9", *PY310_313[:3])),
        *builds("129", ("2.5.1", "2.6.0", "2.7.1", "2.8.0"), ("3.9", *PY310_313)),
    ),
    torch_tag="minor",
    cuda_tag="major",
)
ENGINES = (EXLLAMAV2, EXLLAMAV3)
RELEASES = (*ENGINES, FLASH_ATTN)


@dataclass(frozen=True)
class Machine:
    """What decides which wheels fit: taken from the running system by :func:`detect`."""

    python: str  # "3.12"
    platform: str  # "linux_x86_64", "win_amd64", ...
    torch: str | None = None  # "2.8.0+cu128"; None when torch is not installed
    torch_cuda: str | None = None  # torch.version.cuda, "12.8"; None for a CPU or ROCm build
    cxx11_abi: bool = True  # torch._C._GLIBCXX_USE_CXX11_ABI
    driver_cuda: str | None = None  # the newest CUDA the driver runs (nvidia-smi), "12.8"
    nvcc: str | None = None  # the CUDA toolkit's nvcc version, "12.8"; None when absent


@dataclass
class Choice:
    """What to install and the one-line findings to show."""

    install: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def dotted(cuda: str) -> str:
    """A CUDA build tag as a version: ``"128"`` -> ``"12.8"``."""
    return f"{cuda[:-1]}.{cuda[-1]}"


def _fits(release: Release, build: Build, machine: Machine, torch: str, cuda: str) -> bool:
    """Whether ``build`` of ``release`` loads into torch ``torch`` built for CUDA ``cuda``: the
    same torch minor version and CUDA major version, on this Python and platform."""
    return (
        machine.platform in release.platforms
        and machine.python in build.pythons
        and version(build.torch)[:2] == version(torch)[:2]
        and build.cuda_version[0] == version(cuda)[0]
    )


def wheel_for(release: Release, machine: Machine) -> str | None:
    """The URL of ``release``'s wheel for the installed torch, or None when none is published.
    Of several CUDA builds of the right major version, the one nearest torch's own."""
    if not machine.torch or not machine.torch_cuda:
        return None
    torch, cuda = machine.torch, machine.torch_cuda
    fitting = [b for b in release.builds if _fits(release, b, machine, torch, cuda)]
    if not fitting:
        return None
    wanted = version(cuda)
    best = min(fitting, key=lambda b: (abs(b.cuda_version[1] - wanted[1]), b.cuda))
    return release.wheel_url(best, machine.python, machine.platform, machine.cxx11_abi)


def _torch_build(build: Build) -> str:
    return TORCH_CUDA_BUILD.get(build.cuda, build.cuda)


def recommend_torch(machine: Machine) -> tuple[Build | None, list[str]]:
    """The torch build (version and CUDA) for which the most of exllamav2, exllamav3 and
    flash-attn publish wheels on this Python and platform, within what the driver runs; newer
    torch wins a tie. The packages it leaves without a wheel, each with the reason."""
    driver = version(machine.driver_cuda) if machine.driver_cuda else (0, 0)
    candidates = {
        (b.torch, _torch_build(b))
        for release in ENGINES
        for b in release.builds
        if machine.platform in release.platforms
        and machine.python in b.pythons
        and version(dotted(_torch_build(b))) <= driver
    }
    if not candidates:
        return None, [_no_engine_wheels(machine)]

    def covered(torch: str, cuda: str) -> list[Release]:
        probe = Machine(machine.python, machine.platform, torch, dotted(cuda), machine.cxx11_abi)
        return [r for r in RELEASES if wheel_for(r, probe)]

    torch, cuda = max(candidates, key=lambda c: (len(covered(*c)), version(c[0]), version(c[1])))
    missing = [r for r in RELEASES if r not in covered(torch, cuda)]
    chosen = Build(cuda, torch, (machine.python,))
    notes = [
        f"{r.package} {r.version} publishes no wheel for torch {torch}+cu{cuda} on Python "
        f"{machine.python} ({machine.platform})"
        for r in missing
    ]
    return chosen, notes


def _no_engine_wheels(machine: Machine) -> str:
    if not any(machine.platform in r.platforms for r in ENGINES):
        return f"no prebuilt ExLlama wheels are published for {machine.platform}"
    if not any(machine.python in b.pythons for r in ENGINES for b in r.builds):
        return (
            f"no prebuilt ExLlama wheels are published for Python {machine.python}: use Python "
            "3.10 to 3.13 (PYTHON=python3.12 ./start.sh)"
        )
    return (
        f"the NVIDIA driver runs CUDA {machine.driver_cuda or 'unknown'}, older than every "
        "prebuilt ExLlama wheel (CUDA 11.8 and newer): update the NVIDIA driver"
    )


def torch_pip_args(build: Build) -> list[str]:
    return [f"torch=={build.torch}", "--index-url", TORCH_INDEX.format(cuda=build.cuda)]


def choose(machine: Machine) -> Choice:
    """The wheels for the installed CUDA torch, and a line for each package that has none: the
    engines say what their JIT build needs, flash-attn what running without it means."""
    choice = Choice()
    if not machine.torch or not machine.torch_cuda:
        what = f"torch {machine.torch} is not a CUDA build" if machine.torch else "torch is missing"
        choice.notes.append(
            f"{what}, and the ExLlama engines need one: {' '.join(_recommended_args(machine))}"
        )
        return choice
    for release in RELEASES:
        url = wheel_for(release, machine)
        if url:
            choice.install.append(url)
        elif release is FLASH_ATTN:
            choice.notes.append(
                f"flash-attn: no prebuilt wheel for torch {machine.torch} on Python "
                f"{machine.python} ({machine.platform}), so ExLlamaV2 runs one request at a time "
                "(paged attention and batching need flash-attn >= 2.5.7; ExLlamaV3 batches "
                "without it)"
            )
        else:
            choice.notes.append(jit_note(release, machine))
    return choice


def jit_note(release: Release, machine: Machine) -> str:
    """One line: the engine compiles on first use, and whether that can work here."""
    assert machine.torch_cuda is not None
    head = (
        f"{release.package} {release.version}: no prebuilt wheel for torch {machine.torch} on "
        f"Python {machine.python} ({machine.platform}), so it compiles its CUDA extension on "
        "first use"
    )
    major = version(machine.torch_cuda)[0]
    if machine.nvcc is None:
        return (
            f"{head}, which needs nvcc, not found: install the CUDA {major} toolkit "
            f"(cuda-toolkit-{major}) and put its bin/ on PATH or set CUDA_HOME, or install a "
            f"torch that has wheels ({' '.join(_recommended_args(machine))})"
        )
    if version(machine.nvcc)[0] != major:
        return (
            f"{head}, which needs nvcc of CUDA {major} (torch's), but nvcc is CUDA "
            f"{machine.nvcc}: install the CUDA {major} toolkit and point CUDA_HOME at it"
        )
    return f"{head} (nvcc {machine.nvcc} found; a few minutes, once)"


def _recommended_args(machine: Machine) -> list[str]:
    build, _ = recommend_torch(machine)
    return ["pip install", *torch_pip_args(build)] if build else ["see docs/exllama.md"]


# ----- reading the machine ---------------------------------------------------------------------


def platform_tag() -> str:
    system, machine = platform.system(), platform.machine().lower()
    if system == "Windows":
        return "win_amd64" if machine in ("amd64", "x86_64") else f"win_{machine}"
    return f"{system.lower()}_{machine}"


def _output(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def driver_cuda() -> str | None:
    """The CUDA version in nvidia-smi's header ("CUDA Version: 12.8")."""
    found = re.search(r"CUDA Version:\s*(\d+\.\d+)", _output(["nvidia-smi"]))
    return found.group(1) if found else None


def nvcc_version() -> str | None:
    import os

    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = f"{home}/bin/nvcc" if home else "nvcc"
    found = re.search(r"release (\d+\.\d+)", _output([nvcc, "--version"]))
    return found.group(1) if found else None


def detect() -> Machine:
    torch_version = torch_cuda = None
    abi = True
    try:
        import torch

        torch_version, torch_cuda = torch.__version__, torch.version.cuda
        abi = bool(torch._C._GLIBCXX_USE_CXX11_ABI)
    except ImportError:
        pass
    return Machine(
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        platform=platform_tag(),
        torch=torch_version,
        torch_cuda=torch_cuda,
        cxx11_abi=abi,
        driver_cuda=driver_cuda(),
        nvcc=nvcc_version(),
    )


def say(line: str) -> None:
    print(f"[serval] {line}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if argv[1:] == ["torch"]:
        machine = detect()
        build, notes = recommend_torch(machine)
        for note in notes:
            say(note)
        if build is None:
            return 1
        print(" ".join(torch_pip_args(build)))
        return 0
    if argv[1:] == ["wheels"]:
        choice = choose(detect())
        for note in choice.notes:
            say(note)
        print("\n".join(choice.install))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
