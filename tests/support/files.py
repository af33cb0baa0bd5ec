"""Cheap copies of model folders for test servers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def link_tree(source: Path, target: Path) -> Path:
    """Copy a folder with hard links where the file system allows (a real copy otherwise)."""
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    return target


def models_with_templates(tiny_model: Path, base: Path, templates: dict[str, str]) -> Path:
    """``base`` holding ``tiny_model`` under its own name and once per template, each copy
    shipping that template as its ``chat_template.jinja``."""
    for name, source in templates.items():
        shutil.copytree(tiny_model, base / name)
        (base / name / "chat_template.jinja").write_text(source)
    shutil.copytree(tiny_model, base / tiny_model.name)
    return base
