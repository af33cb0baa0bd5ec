"""Images in requests: decoding within bounds, and fetching URLs within strict limits."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image

from common.config import LimitsConfig, ServalConfig
from common.errors import BadRequestError
from common.image_fetch import FetchPolicy, fetch_image, is_public
from common.images import check_image, decode_data_uri, load_image, load_images
from tests.support.image_host import image_host, png

RED = png((255, 0, 0))


def _data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels (and one tiny data chunk)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


def test_a_data_uri_image_is_decoded_with_its_digest() -> None:
    image = asyncio.run(load_image(_data_uri(RED), ServalConfig()))
    assert (image.width, image.height) == (40, 30)
    assert image.data == RED and len(image.digest) == 64
    assert asyncio.run(load_image(_data_uri(RED), ServalConfig())).digest == image.digest
    assert asyncio.run(load_image(_data_uri(png((0, 0, 255))), ServalConfig())).digest != (
        image.digest
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png;base64,@@@@", "invalid base64"),
        ("data:text/plain;base64,aGk=", "data:image/<type>;base64"),
        ("data:image/png,rawdata", "data:image/<type>;base64"),
        (_data_uri(b"not an image at all"), "not a picture"),
        (_data_uri(RED[: len(RED) // 2]), "damaged"),
        ("ftp://example.com/a.png", "data: URI or an http\\(s\\) URL"),
        ("file:///etc/passwd", "data: URI or an http\\(s\\) URL"),
    ],
)
def test_bad_images_are_a_clear_400(url: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message) as refused:
        asyncio.run(load_image(url, ServalConfig()))
    assert refused.value.status_code == 400


def test_the_byte_limit_is_checked_before_base64_is_decoded() -> None:
    limits = LimitsConfig(max_image_bytes=1024)
    with pytest.raises(BadRequestError, match="larger than 1024 bytes"):
        decode_data_uri("data:image/png;base64," + "A" * 100_000, limits.max_image_bytes)
    with pytest.raises(BadRequestError, match="larger than 1024 bytes"):
        check_image(png((1, 2, 3), (600, 600)) + b"\0" * 2048, limits)


def test_a_picture_with_too_many_pixels_is_refused_unread() -> None:
    """A decompression bomb (a small file that declares a huge picture) never gets decoded."""
    bomb = _png_header_only(100_000, 100_000)
    assert len(bomb) < 100
    with pytest.raises(BadRequestError, match="pixels"):
        check_image(bomb, LimitsConfig())
    with pytest.raises(BadRequestError, match="more than 1000"):
        check_image(png((0, 0, 0), (40, 30)), LimitsConfig(max_image_pixels=1000))


def test_other_formats_and_animated_gifs_are_read() -> None:
    out = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    assert check_image(out.getvalue(), LimitsConfig()).width == 8
    out = io.BytesIO()
    Image.new("RGB", (8, 4)).save(out, "JPEG")
    assert check_image(out.getvalue(), LimitsConfig()).height == 4


def test_the_number_of_images_is_bounded() -> None:
    config = ServalConfig.model_validate({"limits": {"max_images": 1}})
    with pytest.raises(BadRequestError, match="At most 1 images"):
        asyncio.run(load_images([_data_uri(RED)] * 2, config))


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    with image_host(RED) as url:
        yield url


LOCAL = FetchPolicy(max_bytes=1 << 20, timeout=10, max_redirects=3, allow_private=True)


def _fetch(url: str, policy: FetchPolicy = LOCAL) -> bytes:
    return asyncio.run(fetch_image(url, policy))


def test_an_image_url_is_fetched(host: str) -> None:
    assert _fetch(f"{host}/image.png") == RED
    assert _fetch(f"{host}/hop/3") == RED  # three redirects: the limit


def test_fetch_limits_size_time_and_redirects(host: str) -> None:
    with pytest.raises(BadRequestError, match="redirected more than 3 times"):
        _fetch(f"{host}/hop/4")
    with pytest.raises(BadRequestError, match="larger than"):
        _fetch(f"{host}/huge")  # refused by its Content-Length, before the body
    with pytest.raises(BadRequestError, match="larger than"):
        _fetch(f"{host}/endless")  # no length: cut once past the limit
    with pytest.raises(BadRequestError, match=r"longer than 0\.5 s"):
        _fetch(f"{host}/slow", FetchPolicy(1 << 20, 0.5, 3, True))
    with pytest.raises(BadRequestError, match="HTTP status 404"):
        _fetch(f"{host}/missing")


def test_private_addresses_are_refused_by_default_even_after_a_redirect(host: str) -> None:
    public_only = FetchPolicy(max_bytes=1 << 20, timeout=10, max_redirects=3, allow_private=False)
    with pytest.raises(BadRequestError, match="allow_private_image_urls"):
        _fetch(f"{host}/image.png", public_only)
    for target in ("http://10.0.0.1/x.png", "http://[::1]/x.png", "http://169.254.169.254/"):
        with pytest.raises(BadRequestError, match="allow_private_image_urls"):
            _fetch(target, public_only)
    # a redirect's target is checked like the first URL (here: its scheme)
    with pytest.raises(BadRequestError, match="http\\(s\\) URL"):
        _fetch(f"{host}/to?url=file:///etc/passwd")


def test_which_addresses_are_public() -> None:
    assert is_public("8.8.8.8") and is_public("2606:4700:4700::1111")
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "100.64.0.1", "::1"):
        assert not is_public(address)
    assert not is_public("::ffff:127.0.0.1")  # IPv4 loopback mapped into IPv6
    assert not is_public("fe80::1%eth0") and not is_public("224.0.0.1")


def test_disable_fetch_requests_refuses_urls_but_not_data_uris(host: str) -> None:
    config = ServalConfig.model_validate(
        {"network": {"disable_fetch_requests": True, "allow_private_image_urls": True}}
    )
    with pytest.raises(BadRequestError, match="disable_fetch_requests"):
        asyncio.run(load_image(f"{host}/image.png", config))
    assert asyncio.run(load_image(_data_uri(RED), config)).data == RED
