"""Names that clients send for files (models, LoRAs, templates, presets) and where they may lead.

Every such name is resolved below its base folder; a name that is absolute or climbs with ``..``
is refused before anything is read. A symlink on the way leads out only where the caller allows
it: model folders the operator linked into ``model_dir`` (models kept on another disk) are served,
as TabbyAPI serves them; the name in the request still never leaves ``model_dir`` by itself.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from common.errors import BadRequestError

NAME_MAX_BYTES = 255  # the longest file name Linux file systems take (NAME_MAX)
PATH_MAX_BYTES = 1024  # far below PATH_MAX (4096), so base folder + name always fit


def _check_name_bytes(name: str, what: str, param: str) -> None:
    """Refuse a name the file system cannot take: text that is not UTF-8 (a lone surrogate
    from a JSON escape) or a part longer than NAME_MAX bytes, before any path is touched."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequestError(
            f"Invalid {what}: it is not valid UTF-8 text (it holds a lone surrogate).", param=param
        ) from None
    if len(encoded) > PATH_MAX_BYTES:
        raise BadRequestError(
            f"Invalid {what}: it is {len(encoded)} bytes long, at most {PATH_MAX_BYTES}.",
            param=param,
        )
    for part in encoded.split(b"/"):
        if len(part) > NAME_MAX_BYTES:
            raise BadRequestError(
                f"Invalid {what}: a file name may be at most {NAME_MAX_BYTES} bytes "
                f"(one part of it is {len(part)}).",
                param=param,
            )


def safe_child(
    base: Path,
    name: str,
    what: str = "name",
    param: str | None = None,
    follow_links: bool = False,
) -> Path:
    """``base / name`` resolved, or :class:`BadRequestError` if it would leave ``base``.

    ``what`` names the value in the message; ``param`` (default ``what``) is the request field.
    With ``follow_links`` a symlink inside ``base`` may lead elsewhere (the operator put it
    there), and the path is returned as named, below ``base``.
    """
    param = param or what
    if not name or "\x00" in name or "\\" in name:
        raise BadRequestError(f"Invalid {what}: {name!r}", param=param)
    _check_name_bytes(name, what, param)
    relative = PurePosixPath(name)
    if relative.is_absolute() or any(part in ("..", "") for part in relative.parts):
        raise BadRequestError(f"Invalid {what} {name!r}: it must stay inside {base}/", param=param)
    root = base.resolve()
    if follow_links:
        return root / relative
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise BadRequestError(f"Invalid {what} {name!r}: it leads outside {base}/", param=param)
    return target
