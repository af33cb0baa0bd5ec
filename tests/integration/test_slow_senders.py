"""Slow senders over raw sockets: headers and bodies have deadlines, connections a cap.

A server of its own with short deadlines (network.header_timeout 1 s, body_timeout 2 s) and no
model: none of this reaches a model. Every loop is bounded, every bound generous.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import API_KEY, ServerProcess

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 8
TRICKLE = 0.3  # seconds between pieces: well inside any per-chunk silence limit
PIECES = 40  # 12 s of trickling at most: far past both deadlines
INFO = b"GET /.well-known/serviceinfo HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {
        "network": {
            "header_timeout": HEADER_TIMEOUT,
            "body_timeout": BODY_TIMEOUT,
            "max_connections": MAX_CONNECTIONS,
        },
        "model": {"model_name": None},
        "embeddings": {"embedding_model_name": None},
    }
    process = ServerProcess(tmp_path_factory.mktemp("slow-senders"), config)
    process.start(wait_for_model=False)
    yield process
    process.stop()


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _trickle(sock: socket.socket, pieces: Iterator[bytes]) -> tuple[bytes, float]:
    """Send ``pieces`` TRICKLE seconds apart until the server answers or closes: (its reply,
    seconds it took). Raises if the server is still waiting after every piece was sent."""
    started = time.monotonic()
    sock.setblocking(False)
    try:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:  # closed by the server
                return b"", time.monotonic() - started
            time.sleep(TRICKLE)
            with contextlib.suppress(BlockingIOError):
                reply = sock.recv(65536)
                return reply, time.monotonic() - started  # b"" when closed
    except ConnectionResetError:
        return b"", time.monotonic() - started
    raise AssertionError(f"still open after {time.monotonic() - started:.0f} s of trickling")


def _header_lines() -> Iterator[bytes]:
    for index in range(PIECES):
        yield f"X-Slow-{index}: {index}\r\n".encode()


def test_headers_sent_a_line_at_a_time_are_cut_off(slow_server: ServerProcess) -> None:
    with _connect(slow_server) as sock:
        sock.sendall(INFO)
        reply, seconds = _trickle(sock, _header_lines())
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert seconds < HEADER_TIMEOUT * 6


def test_a_connection_that_sends_nothing_is_closed(slow_server: ServerProcess) -> None:
    with _connect(slow_server) as sock:
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed, not timed out (the socket waits 10 s)
    assert time.monotonic() - started < HEADER_TIMEOUT * 6


def test_a_kept_alive_connection_has_the_header_deadline_too(slow_server: ServerProcess) -> None:
    with _connect(slow_server) as sock:
        sock.sendall(INFO + b"\r\n")
        first = b""
        deadline = time.monotonic() + 10
        while not first.endswith(b"}}}") and time.monotonic() < deadline:  # the whole answer
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        sock.sendall(INFO)  # the next request's headers come slowly
        reply, seconds = _trickle(sock, _header_lines())
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert seconds < HEADER_TIMEOUT * 6


def test_a_body_sent_a_byte_at_a_time_gets_408(slow_server: ServerProcess) -> None:
    """network.body_timeout used to bound only the silence between chunks."""
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
    )
    with _connect(slow_server) as sock:
        sock.sendall(head)
        reply, seconds = _trickle(sock, iter([b"{"] + [b" "] * PIECES))
        reply += _rest(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"network.body_timeout" in reply
    assert seconds < BODY_TIMEOUT * 4


def test_open_connections_are_capped(slow_server: ServerProcess) -> None:
    idle = [_connect(slow_server) for _ in range(MAX_CONNECTIONS)]
    try:
        refused = httpx.get(f"{slow_server.url}/.well-known/serviceinfo", timeout=10)
        assert refused.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server notices the closed sockets at once
        if httpx.get(f"{slow_server.url}/.well-known/serviceinfo", timeout=10).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("the server still refuses after the idle connections closed")


def _rest(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data
