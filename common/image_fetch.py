"""Fetching an image URL named in a request, within strict limits.

Only http and https; at most ``limits.image_fetch_redirects`` redirects, each target checked as
the first URL was; at most ``limits.max_image_bytes`` read (a larger ``Content-Length`` is
refused before the body); ``limits.image_fetch_timeout`` seconds for the whole fetch, redirects
included. Unless ``network.allow_private_image_urls``, only public addresses are reached: the
check runs where the connection is made (httpcore's network backend, given the address that was
checked), so a name that resolves to a public address when checked and to a private one when
connecting cannot slip through. No proxy from the environment is used and no cookie is kept.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore

from common.config import ServalConfig
from common.errors import BadRequestError

_PARAM = "messages"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = [(b"Accept", b"image/*"), (b"User-Agent", b"Serval image fetch")]


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    timeout: float
    max_redirects: int
    allow_private: bool

    @classmethod
    def from_config(cls, config: ServalConfig) -> FetchPolicy:
        limits = config.limits
        return cls(
            max_bytes=limits.max_image_bytes,
            timeout=limits.image_fetch_timeout,
            max_redirects=limits.image_fetch_redirects,
            allow_private=config.network.allow_private_image_urls,
        )


def _refused(message: str) -> BadRequestError:
    return BadRequestError(message, param=_PARAM, code="image_fetch_failed")


def is_public(address: str) -> bool:
    """Whether ``address`` is a public unicast address (not loopback, private, link-local,
    shared, reserved or multicast; an IPv4 address mapped into IPv6 is judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def checked_address(host: str, port: int, allow_private: bool) -> str:
    """An address of ``host`` to connect to; refused when any of them is not public."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise _refused(f"The image URL's host {host!r} cannot be resolved.") from None
    addresses = [str(entry[4][0]) for entry in found]
    if not addresses:
        raise _refused(f"The image URL's host {host!r} has no address.")
    if not allow_private and not all(is_public(address) for address in addresses):
        raise _refused(
            f"The image URL's host {host!r} is a loopback, private or link-local address, "
            "which is not fetched (network.allow_private_image_urls)."
        )
    return addresses[0]


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, connecting only to addresses that pass the check."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await checked_address(host, port, self._allow_private)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused("An image URL must be an http(s) URL with a host.")
    return url


async def fetch_image(url: str, policy: FetchPolicy) -> bytes:
    """The body of ``url`` (an image, by the caller's later check), within ``policy``."""
    try:
        async with asyncio.timeout(policy.timeout):
            return await _fetch(url, policy)
    except TimeoutError:
        raise _refused(
            f"Fetching the image took longer than {policy.timeout:g} s "
            "(limits.image_fetch_timeout)."
        ) from None
    except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol) as exc:
        raise _refused(f"Fetching the image failed: {type(exc).__name__}: {exc}") from None


async def _fetch(url: str, policy: FetchPolicy) -> bytes:
    async with httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(),
        network_backend=_CheckedBackend(policy.allow_private),
        max_connections=1,
    ) as pool:
        for _ in range(policy.max_redirects + 1):
            async with pool.stream("GET", _checked_url(url), headers=_HEADERS) as response:
                headers = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in response.headers
                }
                if response.status in _REDIRECTS and "location" in headers:
                    url = urljoin(url, headers["location"])
                    continue
                if response.status != 200:
                    raise _refused(f"Fetching the image got HTTP status {response.status}.")
                return await _body(response, headers, policy.max_bytes)
        raise _refused(
            f"The image URL redirected more than {policy.max_redirects} times "
            "(limits.image_fetch_redirects)."
        )


async def _body(response: httpcore.Response, headers: dict[str, str], max_bytes: int) -> bytes:
    too_large = _refused(
        f"The image at the URL is larger than {max_bytes} bytes (limits.max_image_bytes)."
    )
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for piece in response.aiter_stream():
        body += piece
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)
