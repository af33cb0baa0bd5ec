"""Which prebuilt GPU wheels scripts/setup.sh installs (scripts/gpu_packages.py), for a matrix of
Python, torch, CUDA and platform, and the one-line messages for what is missing."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest

from tests.support.scripts import import_script

RELEASES = "https://github.com/turboderp-org"
FLASH = "https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3"


@pytest.fixture(scope="module")
def gp() -> ModuleType:
    return import_script("gpu_packages")


def machine(gp: ModuleType, python: str, torch: str | None = None, **more: object) -> object:
    cuda = None
    if torch and "+cu" in torch:
        tag = torch.split("+cu")[1]
        cuda = f"{tag[:-1]}.{tag[-1]}"
    return gp.Machine(python, more.pop("platform", "linux_x86_64"), torch, cuda, **more)


@pytest.mark.parametrize(
    ("python", "torch", "wanted"),
    [
        (
            "3.11",
            "2.8.0+cu128",
            [
                f"{RELEASES}/exllamav2/releases/download/v0.3.2/"
                "exllamav2-0.3.2+cu128.torch2.8.0-cp311-cp311-linux_x86_64.whl",
                f"{RELEASES}/exllamav3/releases/download/v1.6.5/"
                "exllamav3-1.6.5+cu128.torch2.8.0-cp311-cp311-linux_x86_64.whl",
                f"{FLASH}/flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl",
            ],
        ),
        (  # a patch release of torch takes the wheels of its minor version
            "3.13",
            "2.7.1+cu128",
            [
                f"{RELEASES}/exllamav2/releases/download/v0.3.2/"
                "exllamav2-0.3.2+cu128.torch2.7.0-cp313-cp313-linux_x86_64.whl",
                f"{RELEASES}/exllamav3/releases/download/v1.6.5/"
                "exllamav3-1.6.5+cu128.torch2.7.0-cp313-cp313-linux_x86_64.whl",
                f"{FLASH}/flash_attn-2.8.3+cu12torch2.7cxx11abiTRUE-cp313-cp313-linux_x86_64.whl",
            ],
        ),
        (  # a CUDA 12.6 torch takes CUDA 12 wheels; flash-attn for torch 2.9 is not published
            "3.12",
            "2.9.0+cu126",
            [
                f"{RELEASES}/exllamav2/releases/download/v0.3.2/"
                "exllamav2-0.3.2+cu128.torch2.9.0-cp312-cp312-linux_x86_64.whl",
                f"{RELEASES}/exllamav3/releases/download/v1.6.5/"
                "exllamav3-1.6.5+cu128.torch2.9.0-cp312-cp312-linux_x86_64.whl",
            ],
        ),
        (  # CUDA 13 torch: only exllamav3 has a CUDA 13 wheel, built with 13.2
            "3.12",
            "2.11.0+cu130",
            [
                f"{RELEASES}/exllamav3/releases/download/v1.6.5/"
                "exllamav3-1.6.5+cu132.torch2.11.0-cp312-cp312-linux_x86_64.whl"
            ],
        ),
        (  # of two CUDA builds for one torch, the one nearest torch's own
            "3.11",
            "2.6.0+cu124",
            [
                f"{RELEASES}/exllamav2/releases/download/v0.3.2/"
                "exllamav2-0.3.2+cu124.torch2.6.0-cp311-cp311-linux_x86_64.whl",
                f"{FLASH}/flash_attn-2.8.3+cu12torch2.6cxx11abiTRUE-cp311-cp311-linux_x86_64.whl",
            ],
        ),
        (
            "3.10",
            "2.6.0+cu118",
            [
                f"{RELEASES}/exllamav2/releases/download/v0.3.2/"
                "exllamav2-0.3.2+cu118.torch2.6.0-cp310-cp310-linux_x86_64.whl"
            ],
        ),
        ("3.11", "2.13.0+cu130", []),  # newer than every published build
        ("3.14", "2.8.0+cu128", []),  # no torch 2.8 builds for Python 3.14
    ],
)
def test_wheels_follow_the_installed_torch(
    gp: ModuleType, python: str, torch: str, wanted: list[str]
) -> None:
    assert gp.choose(machine(gp, python, torch, nvcc="12.8")).install == wanted


def test_flash_attn_follows_torchs_cxx11_abi_and_linux_only(gp: ModuleType) -> None:
    old_abi = gp.choose(machine(gp, "3.11", "2.6.0+cu124", cxx11_abi=False)).install
    assert old_abi[-1].endswith(
        "flash_attn-2.8.3+cu12torch2.6cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
    )
    windows = gp.choose(machine(gp, "3.12", "2.8.0+cu128", platform="win_amd64"))
    assert [url.rsplit("/", 1)[1] for url in windows.install] == [
        "exllamav2-0.3.2+cu128.torch2.8.0-cp312-cp312-win_amd64.whl",
        "exllamav3-1.6.5+cu128.torch2.8.0-cp312-cp312-win_amd64.whl",
    ]
    assert gp.choose(machine(gp, "3.12", "2.8.0+cu128", platform="linux_aarch64")).install == []


@pytest.mark.parametrize(
    ("python", "driver", "torch", "left_out"),
    [
        ("3.11", "12.8", "2.8.0+cu128", []),  # all three packages: the newest such torch
        ("3.13", "13.0", "2.8.0+cu128", []),  # a newer driver runs older CUDA builds
        ("3.12", "12.4", "2.6.0+cu124", ["exllamav3"]),  # exllamav3 starts at CUDA 12.8
        ("3.12", "12.1", "2.5.0+cu121", ["exllamav3"]),
        ("3.14", "12.8", "2.11.0+cu128", ["exllamav2", "flash-attn"]),
        ("3.14", "13.2", "2.11.0+cu130", ["exllamav2", "flash-attn"]),
    ],
)
def test_the_torch_to_install_has_the_most_wheels(
    gp: ModuleType, python: str, driver: str, torch: str, left_out: list[str]
) -> None:
    build, notes = gp.recommend_torch(machine(gp, python, driver_cuda=driver))
    assert f"{build.torch}+cu{build.cuda}" == torch
    assert gp.torch_pip_args(build) == [
        f"torch=={build.torch}",
        "--index-url",
        f"https://download.pytorch.org/whl/cu{build.cuda}",
    ]
    assert [note.split()[0] for note in notes] == left_out
    assert all("publishes no wheel" in note for note in notes)


@pytest.mark.parametrize(
    ("python", "driver", "platform", "words"),
    [
        ("3.9", "12.8", "linux_x86_64", "Python 3.9: use Python 3.10 to 3.13"),
        ("3.12", "11.4", "linux_x86_64", "driver runs CUDA 11.4, older than every prebuilt"),
        ("3.12", "12.8", "linux_aarch64", "no prebuilt ExLlama wheels are published for linux"),
    ],
)
def test_no_torch_to_recommend_says_why(
    gp: ModuleType, python: str, driver: str, platform: str, words: str
) -> None:
    build, notes = gp.recommend_torch(machine(gp, python, driver_cuda=driver, platform=platform))
    assert build is None
    assert len(notes) == 1 and words in notes[0]


def test_the_jit_fallback_says_in_one_line_what_is_missing(gp: ModuleType) -> None:
    def notes(**more: object) -> list[str]:
        found = gp.choose(machine(gp, "3.11", "2.13.0+cu130", driver_cuda="13.0", **more))
        assert found.install == []
        assert all("\n" not in note for note in found.notes)
        return found.notes

    no_nvcc = notes(nvcc=None)
    assert [n.split()[0] for n in no_nvcc] == ["exllamav2", "exllamav3", "flash-attn:"]
    assert "compiles its CUDA extension on first use, which needs nvcc, not found" in no_nvcc[0]
    assert "install the CUDA 13 toolkit" in no_nvcc[0]
    assert (
        "pip install torch==2.8.0 --index-url https://download.pytorch.org/whl/cu128"
        in (no_nvcc[0])
    )
    wrong_major = notes(nvcc="12.4")
    assert "needs nvcc of CUDA 13 (torch's), but nvcc is CUDA 12.4" in wrong_major[0]
    ready = notes(nvcc="13.0")
    assert ready[0].endswith("(nvcc 13.0 found; a few minutes, once)")
    assert "ExLlamaV2 runs one request at a time" in ready[2]


def test_a_cpu_torch_on_a_gpu_machine_is_named_with_the_fix(gp: ModuleType) -> None:
    found = gp.choose(gp.Machine("3.11", "linux_x86_64", "2.13.0+cpu", None, driver_cuda="12.8"))
    assert found.install == []
    (note,) = found.notes
    assert note.startswith("torch 2.13.0+cpu is not a CUDA build, and the ExLlama engines need")
    assert "pip install torch==2.8.0 --index-url https://download.pytorch.org/whl/cu128" in note


def test_the_machine_is_read_from_the_system(gp: ModuleType) -> None:
    found = gp.detect()
    assert found.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert found.platform == "linux_x86_64"
    assert found.torch is not None and found.torch_cuda is None  # the CPU build here
