"""What the server imports comes with what ``./start.sh`` installs: the dependencies and the
engine extras of pyproject.toml, never the test extra (``./test.sh`` installs that too, so a
runtime import of a test-only package passes every other test and breaks ``./start.sh``)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from tests.support.server import ROOT

OWN_PACKAGES = {"main", "common", "endpoints", "backends", "scripts", "bench", "tests"}
# What ./start.sh installs on a machine without a GPU, and on one with (scripts/setup.sh).
CPU_EXTRAS = ("cpu", "convert")
GPU_EXTRAS = ("exl2", "exl3", "convert")
GPU_FOLDERS = ("backends/exllama", "backends/exllamav2", "backends/exllamav3")
# The scripts scripts/setup.sh runs (the others are tools of the test and GPU checks).
SET_UP_SCRIPTS = ("scripts/fetch_default_model.py", "scripts/gpu_packages.py")


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install, with what each of them requires."""
    found: set[str] = set()
    todo = [
        r for r in requirements if Requirement(r).marker is None or Requirement(r).marker.evaluate()
    ]
    while todo:
        name = _name(todo.pop())
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (a GPU extra on a CPU machine)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(text)
    return found


def _installed(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return _closure(wanted)


def _imported_modules(path: Path) -> set[str]:
    """The top-level modules ``path`` imports anywhere (at the top or inside a function)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    return modules - OWN_PACKAGES - set(sys.stdlib_module_names) - {"__future__"}


def test_every_runtime_import_comes_with_what_start_sh_installs() -> None:
    distributions = importlib.metadata.packages_distributions()
    cpu, gpu = _installed(CPU_EXTRAS), _installed(GPU_EXTRAS)
    files = [ROOT / name for name in ("main.py", *SET_UP_SCRIPTS)] + [
        path
        for folder in ("common", "endpoints", "backends")
        for path in (ROOT / folder).rglob("*.py")
    ]
    missing: list[str] = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        allowed = gpu if relative.startswith(GPU_FOLDERS) else cpu
        for module in sorted(_imported_modules(path)):
            owners = {_name(d) for d in distributions.get(module, [module])}
            if not owners & allowed:
                missing.append(f"{relative}: {module} ({', '.join(sorted(owners))})")
    assert not missing, "imported but not installed by ./start.sh:\n" + "\n".join(missing)
