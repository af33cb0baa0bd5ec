"""The scripts under scripts/ imported as modules, for tests of their helpers."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support.server import ROOT


def import_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as the module ``name`` (registered in ``sys.modules``, so that its
    dataclasses resolve their own module)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
