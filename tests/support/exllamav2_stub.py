"""STUB: a stand-in for exllamav2's compiled CUDA extension ``exllamav2_ext``, for CPU tests only.

``import exllamav2`` compiles (or loads) its native extension unless a module of that name is
importable. Putting an empty module under that name lets exllamav2's real Python code import on
a machine without CUDA: config reading, the tokenizer, sampler settings and job construction
work; anything that would run a kernel fails with ``AttributeError``. Only the native kernels
are replaced; every other line that runs is exllamav2's own.
"""

from __future__ import annotations

import sys
import types
from types import ModuleType

STUB_NAME = "exllamav2_ext"


def import_exllamav2() -> ModuleType:
    """exllamav2 itself, imported over the stub extension (installed first when needed)."""
    if "exllamav2" in sys.modules:
        return sys.modules["exllamav2"]
    import torch

    stub = types.ModuleType(STUB_NAME, "STUB of exllamav2's CUDA extension (CPU tests only)")
    sys.modules.setdefault(STUB_NAME, stub)
    threads = torch.get_num_threads()
    try:
        import exllamav2
    finally:
        torch.set_num_threads(threads)  # the import lowers torch's CPU threads to one, globally
    return exllamav2
