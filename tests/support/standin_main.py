"""STAND-IN launcher: ``main.py`` with the GPU engines' CUDA parts replaced (CPU tests only;
see tests/support/standin_engines.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.standin_engines import install

install()

import main  # noqa: E402

sys.exit(main.main())
