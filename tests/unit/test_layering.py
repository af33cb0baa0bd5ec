"""The import rules of docs/architecture.md, read from the source: the engine contract is a leaf
(backends import nothing from common/ but its errors), and routes never reach an engine."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.server import ROOT

ENGINE_LIBRARIES = {"exllamav2", "exllamav3", "torch", "transformers", "llguidance", "flash_attn"}


def _imports(folder: str) -> list[tuple[Path, str]]:
    """Every module ``folder``'s files import, with the file that imports it."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((path, node.module))
    return found


def test_backends_import_only_the_errors_of_common_and_no_web_framework() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module in _imports("backends")
        if (module.split(".")[0] == "common" and module != "common.errors")
        or module.split(".")[0] in {"fastapi", "starlette", "endpoints"}
    ]
    assert not wrong


def test_endpoints_import_no_engine_library_and_no_engine() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module in _imports("endpoints")
        if module.split(".")[0] in ENGINE_LIBRARIES
        or (module.startswith("backends.") and module not in {"backends.base", "backends.sampling"})
    ]
    assert not wrong
    engine = re.compile(r"\.engine\b|\bEngine\b")
    named = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "endpoints").rglob("*.py")
        if engine.search(path.read_text(encoding="utf-8"))
    ]
    assert not named, "routes talk to the lease (common.model.Lease), never to the engine"
