"""Images named in chat requests: data URIs decoded, URLs fetched, every one checked.

An image part's URL is a ``data:image/...;base64,`` URI or an http(s) URL (fetched by
``common/image_fetch.py`` unless ``network.disable_fetch_requests``). The bytes must be a PNG,
JPEG, GIF, WebP or BMP file of at most ``limits.max_image_bytes`` whose header declares at most
``limits.max_image_pixels`` pixels; the header is read before any pixel is decoded (so a small
file that would unpack into a huge picture is refused unread), then the whole picture is decoded
once, so a truncated or corrupt file is a 400 here and never an error inside the engine.
What comes out is the engine-neutral :class:`backends.base.ImageInput`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import warnings
from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError

from backends.base import ImageInput
from common.config import LimitsConfig, ServalConfig
from common.errors import BadRequestError
from common.image_fetch import FetchPolicy, fetch_image

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
_PARAM = "messages"


def refuse_images(images: Sequence[object] | None, api: str) -> None:
    """Images sent to a text-only API (Kobold's ``images``, a completion's ``images``) are a
    400, never silently dropped; an empty list (what some clients always send) is no image."""
    if images:
        raise BadRequestError(
            f"{api} requests cannot hold images: send them as image parts of a chat message "
            "(/v1/chat/completions) to a vision model.",
            param="images",
            code="unsupported",
        )


def check_image_count(count: int, limits: LimitsConfig) -> None:
    if count > limits.max_images:
        raise BadRequestError(
            f"At most {limits.max_images} images per request (limits.max_images).", param=_PARAM
        )


def decode_data_uri(url: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/<type>;base64,<data>`` URI, at most ``max_bytes``."""
    header, comma, payload = url.partition(",")
    media = header.removeprefix("data:")
    if not comma or not media.endswith(";base64") or not media.startswith("image/"):
        raise BadRequestError(
            "An image data URI must read data:image/<type>;base64,<data>.", param=_PARAM
        )
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:
        raise _too_large(max_bytes)
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("An image data URI holds invalid base64.", param=_PARAM) from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def _too_large(max_bytes: int) -> BadRequestError:
    return BadRequestError(
        f"An image is larger than {max_bytes} bytes (limits.max_image_bytes).", param=_PARAM
    )


def check_image(data: bytes, limits: LimitsConfig) -> ImageInput:
    """``data`` as a checked image: a known format within the size and pixel limits, that
    decodes to the end (blocking: call it off the event loop)."""
    if len(data) > limits.max_image_bytes:
        raise _too_large(limits.max_image_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
                if width * height > limits.max_image_pixels:
                    raise BadRequestError(
                        f"An image of {width}x{height} pixels has more than "
                        f"{limits.max_image_pixels} (limits.max_image_pixels).",
                        param=_PARAM,
                    )
                image.load()
    except BadRequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequestError("An image has too many pixels to decode.", param=_PARAM) from None
    except UnidentifiedImageError:
        raise BadRequestError(
            f"An image is not a picture Serval reads ({', '.join(FORMATS)}).", param=_PARAM
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadRequestError(f"An image is damaged: {exc}", param=_PARAM) from None
    if width < 1 or height < 1:
        raise BadRequestError("An image has no pixels.", param=_PARAM)
    return ImageInput(data, hashlib.sha256(data).hexdigest(), width, height)


async def load_image(url: str, config: ServalConfig) -> ImageInput:
    """The checked image that ``url`` (a data URI or an http(s) URL) names."""
    limits = config.limits
    if url.startswith("data:"):
        data = decode_data_uri(url, limits.max_image_bytes)
    elif url.split(":", 1)[0].lower() in ("http", "https"):
        if config.network.disable_fetch_requests:
            raise BadRequestError(
                "Image URLs are not fetched on this server (network.disable_fetch_requests): "
                "send the image as a data URI.",
                param=_PARAM,
                code="fetch_disabled",
            )
        data = await fetch_image(url, FetchPolicy.from_config(config))
    else:
        raise BadRequestError("An image URL must be a data: URI or an http(s) URL.", param=_PARAM)
    return await asyncio.to_thread(check_image, data, limits)


async def load_images(urls: Sequence[str], config: ServalConfig) -> list[ImageInput]:
    """The images of ``urls``, in order (at most ``limits.max_images``)."""
    check_image_count(len(urls), config.limits)
    return [await load_image(url, config) for url in urls]
