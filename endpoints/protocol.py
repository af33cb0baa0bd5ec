"""uvicorn's HTTP/1.1 protocol (h11) with a deadline on request headers.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not the time a client
takes to send a request's headers, and every byte that arrives cancels the keep-alive timer: a
client sending one header line every few seconds holds its connection forever (slowloris). Here
a connection must deliver each request's complete headers within ``network.header_timeout``
seconds, counted from the connection opening or, for a later request on a kept-alive
connection, from its first byte. Past that the connection is answered 408 (when part of a
request came) and closed.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_TIMEOUT_BODY = (
    b'{"error": {"message": "The request headers did not arrive in time '
    b'(network.header_timeout).", "type": "invalid_request_error", "param": null, '
    b'"code": "request_timeout"}}'
)
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class HeaderDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request headers come too slowly."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _partial_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_headers():
            self._partial_request = True
            if self._header_timer is None:  # a new request began on a kept-alive connection
                self._arm_header_deadline()
        else:
            self._disarm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _waiting_for_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _arm_header_deadline(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._partial_request = False

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._waiting_for_headers():
            return
        if self._partial_request:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give ``uvicorn.run(http=...)`` for a deadline of ``seconds``."""

    class Configured(HeaderDeadlineProtocol):
        header_timeout = seconds

    return Configured
