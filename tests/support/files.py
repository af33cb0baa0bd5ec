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
