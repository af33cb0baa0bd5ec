"""Names that clients send for files (models, LoRAs, templates, presets) and where they may lead.

Every such name is resolved below its base folder; a name that is absolute, climbs with ``..``,
or leads out through a symlink is refused before anything is read.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from common.errors import BadRequestError


def safe_child(base: Path, name: str, what: str = "name", param: str | None = None) -> Path:
    """``base / name`` resolved, or :class:`BadRequestError` if it would leave ``base``.

    ``what`` names the value in the message; ``param`` (default ``what``) is the request field.
    """
    param = param or what
    if not name or "\x00" in name or "\\" in name:
        raise BadRequestError(f"Invalid {what}: {name!r}", param=param)
    relative = PurePosixPath(name)
    if relative.is_absolute() or any(part in ("..", "") for part in relative.parts):
        raise BadRequestError(f"Invalid {what} {name!r}: it must stay inside {base}/", param=param)
    root = base.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise BadRequestError(f"Invalid {what} {name!r}: it leads outside {base}/", param=param)
    return target
