"""llama.cpp's C library, from the prebuilt ``llama-cpp-py-sync`` wheel, opened through cffi.

The wheel ships libllama and the ggml libraries (a CPU build for AVX2 machines) and the cffi
declarations of llama.h; nothing is compiled. It is built against glibc 2.38, whose C23
headers rename ``strtol``, ``strtoul``, ``strtoull`` and ``sscanf`` to ``__isoc23_*``
variants, so on an older glibc (Debian 12 has 2.36) the loader refuses the libraries for
those five symbols alone. Then this module writes a copy of the libraries in the user's cache
folder in which those imports name the classic functions again (they differ only in also
reading ``0b`` binary literals, which llama.cpp never parses), and opens that copy.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

PACKAGE = "llama_cpp_py_sync"
C23_PREFIX = b"__isoc23_"
NEW_GLIBC = b"GLIBC_2.38"
OLD_GLIBC = b"GLIBC_2.2.5"
SHT_DYNSYM = 11
SHT_GNU_VERNEED = 0x6FFFFFFE
# The wheel's ggml-cpu is built for these x86-64 extensions (llama_print_system_info says so);
# on a CPU without one it would die of an illegal instruction, so it is not opened there.
X86_FEATURES = ("avx", "avx2", "fma", "f16c")


@dataclass(frozen=True)
class Native:
    """The opened library: ``lib`` holds llama.h's functions, ``ffi`` its types."""

    ffi: Any
    lib: Any
    folder: Path
    version: str

    @property
    def cpu_features(self) -> str:
        """The CPU features the loaded ggml build uses, as llama.cpp prints them."""
        text: bytes = self.ffi.string(self.lib.llama_print_system_info())
        return text.decode().strip().rstrip("|").strip()


def package_folder() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _elf_hash(name: bytes) -> int:
    value = 0
    for byte in name:
        value = ((value << 4) + byte) & 0xFFFFFFFF
        high = value & 0xF0000000
        if high:
            value ^= high >> 24
        value &= ~high & 0xFFFFFFFF
    return value


def _c_string(table: bytes, offset: int) -> bytes:
    return table[offset : table.index(b"\0", offset)]


def use_classic_glibc_symbols(image: bytearray) -> int:
    """Rewrite an x86-64 ELF shared library in place so that it imports the glibc 2.2.5
    ``strtol`` family instead of glibc 2.38's ``__isoc23_*`` one; the number of changes."""
    (section_table,) = struct.unpack_from("<Q", image, 0x28)
    entry_size, count = struct.unpack_from("<HH", image, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", image, section_table + i * entry_size)
        for i in range(count)
    ]
    dynsym = next(section for section in sections if section[1] == SHT_DYNSYM)
    strings_at, strings_size = sections[dynsym[6]][4], sections[dynsym[6]][5]
    strings = bytes(image[strings_at : strings_at + strings_size])
    old_name = strings.find(b"\0" + OLD_GLIBC + b"\0") + 1
    changes = 0
    for section in sections:
        if section[1] != SHT_GNU_VERNEED or old_name == 0:
            continue
        need = section[4]
        for _ in range(section[7]):  # sh_info: how many libraries versions are needed from
            _, aux_count, _, aux_offset, next_need = struct.unpack_from("<HHIII", image, need)
            aux = need + aux_offset
            for _ in range(aux_count):
                _, flags, index, name, next_aux = struct.unpack_from("<IHHII", image, aux)
                if _c_string(strings, name) == NEW_GLIBC:
                    struct.pack_into(
                        "<IHHII", image, aux, _elf_hash(OLD_GLIBC), flags, index, old_name, next_aux
                    )
                    changes += 1
                aux += next_aux
            need += next_need
    start = strings.find(b"\0" + C23_PREFIX)
    while start >= 0:
        name = _c_string(strings, start + 1)
        classic = name.removeprefix(C23_PREFIX) + b"\0"
        image[strings_at + start + 1 : strings_at + start + 1 + len(classic)] = classic
        changes += 1
        start = strings.find(b"\0" + C23_PREFIX, start + 1)
    return changes


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "serval"


def patched_copy(folder: Path) -> Path:
    """A copy of ``folder``'s libraries that loads on glibc 2.34-2.37 (made once, then reused)."""
    libraries = sorted(folder.glob("lib*.so*"))
    digest = hashlib.sha256()
    for library in libraries:
        stat = library.stat()
        digest.update(f"{library.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache_root() / f"llama-cpp-{digest.hexdigest()[:16]}"
    if (target / "libllama.so").is_file():
        return target
    staging = target.with_name(f"{target.name}.{os.getpid()}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    for library in libraries:
        image = bytearray(library.read_bytes())
        use_classic_glibc_symbols(image)
        (staging / library.name).write_bytes(image)
    try:
        staging.rename(target)
    except OSError:  # another process made it first
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    logger.info(f"llama.cpp: made a copy of its libraries for this glibc in {target}")
    return target


def missing_cpu_features() -> list[str]:
    """The x86-64 extensions the prebuilt library needs that this CPU lacks."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((line for line in text.splitlines() if line.startswith("flags")), "").split())
    return [feature for feature in X86_FEATURES if feature not in flags]


@functools.cache
def load() -> Native:
    """Open llama.cpp once per process (its backend initialised, its log kept quiet)."""
    folder = package_folder()
    if folder is None:
        raise ImportError(f"{PACKAGE} is not installed (it comes with the cpu extra)")
    missing = missing_cpu_features()
    if missing:
        raise OSError(f"this CPU lacks {', '.join(missing)}, which the prebuilt llama.cpp needs")
    from llama_cpp_py_sync._cffi_bindings import ffi
    from llama_cpp_py_sync._version import __version__

    try:
        lib = ffi.dlopen(str(folder / "libllama.so"))
    except OSError as exc:
        if NEW_GLIBC.decode() not in str(exc):
            raise
        lib = ffi.dlopen(str(patched_copy(folder) / "libllama.so"))
    native = Native(ffi=ffi, lib=lib, folder=folder, version=str(__version__))
    lib.llama_log_set(_log_callback(ffi), ffi.NULL)
    lib.llama_backend_init()
    return native


# Warnings that do not apply to how Serval runs llama.cpp, logged at debug level: the cache is
# one pool shared by every sequence (kv_unified), so its size is over the trained context by
# design, while each sequence is held to the model's context by Serval itself.
_EXPECTED_WARNINGS = ("llama_context: n_ctx_seq",)


@functools.cache
def _log_callback(ffi: Any) -> Any:
    """llama.cpp's log to loguru: errors and warnings only (it prints pages while loading).
    Cached so the callback lives as long as the library that calls it."""
    error_level, warn_level = 4, 3  # ggml_log_level: GGML_LOG_LEVEL_WARN = 3, ERROR = 4

    @ffi.callback("void(enum ggml_log_level, const char *, void *)")
    def forward(level: int, text: Any, _: Any) -> None:
        if level in (warn_level, error_level) and text != ffi.NULL:
            message = ffi.string(text).decode(errors="replace").rstrip()
            if not message:
                return
            if level == error_level:
                logger.error(f"llama.cpp: {message}")
            elif message.startswith(_EXPECTED_WARNINGS):
                logger.debug(f"llama.cpp: {message}")
            else:
                logger.warning(f"llama.cpp: {message}")

    return forward
