"""Fair scheduling on the real server: one key cannot starve another, a client that does not
read its stream does not keep its slot, and an aborted generation counts the tokens it sent.

The flooding key opens its streams on raw sockets with a small receive buffer and never reads
them, as the attack did (with 12 streams and a share of 4 instead of 200 streams).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.metrics import metric
from tests.support.server import ADMIN_KEY, API_KEY, ServerProcess

KEY_A = API_KEY
KEY_B = "api-key-b-for-tests-0123456789abcdef"
LONG_STREAM = {"prompt": "x", "max_tokens": 400, "min_tokens": 400, "stream": True}
# The prompts' tokens with 20 top logprobs each, echoed in 24 choices: some 6 MB at once, more
# than the socket buffers hold (4 MB here), so the server's sends block on a client that does
# not read.
BULKY_STREAM = {
    "prompt": [[5] * 480, [6] * 480, [7] * 480],
    "n": 8,
    "echo": True,
    "logprobs": 20,
    "max_tokens": 1,
    "stream": True,
}


def start_server(
    workdir: Path, tiny_models: Path, *, slots: int, queued: int, share: float, send_timeout: float
) -> ServerProcess:
    """Keys a and b on ``slots`` generation slots (max_concurrent_requests), ``queued`` places
    in line, a key's ``share`` of both, and ``send_timeout`` (stream_send_timeout)."""
    network = {
        "max_concurrent_requests": slots,
        "max_queued_requests": queued,
        "key_share": share,
        "stream_send_timeout": send_timeout,
    }
    config = {
        "network": {"metrics_auth": "none", **network},
        "model": {"model_dir": str(tiny_models), "model_name": "tiny-a"},
        "embeddings": {"embedding_model_name": None},
    }
    server = ServerProcess(workdir, config, keys=False)
    keys = {"api_key": [KEY_A, KEY_B], "admin_key": ADMIN_KEY}
    (workdir / "api_tokens.yml").write_text(yaml.safe_dump(keys))
    return server.start()


def open_unread_stream(server: ServerProcess, key: str, body: dict) -> socket.socket:
    """Send a completion request on a raw socket that is then never read."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", server.port))
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    conn.sendall(head.encode() + payload)
    return conn


def answered(conn: socket.socket) -> bool:
    """Whether the server has sent anything on ``conn`` (without reading it)."""
    try:
        return bool(conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Raw client sockets, closed after the test (tests close them before stopping the server,
    which would otherwise wait for their connections)."""
    opened: list[socket.socket] = []
    yield opened
    close_all(opened)


def close_all(sockets: list[socket.socket]) -> None:
    for conn in sockets:
        conn.close()


@pytest.mark.timeout(300)  # 12 streams of 400 tokens running beside: slow on 2 busy cores
def test_one_key_flooding_streams_neither_blocks_nor_queues_out_another_key(
    tiny_models: Path, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """Eight slots and a share of one half: key a's 12 unread streams take 4 slots and 8 places
    in line; a's next request gets 429, and key b's short completion runs at once and finishes
    while a's queued streams are still waiting."""
    server = start_server(tmp_path, tiny_models, slots=8, queued=16, share=0.5, send_timeout=0)
    try:
        sockets += [open_unread_stream(server, KEY_A, LONG_STREAM) for _ in range(12)]
        wait_for(
            lambda: metric(server.url, "serval_waiting_requests") == 8, "a's requests to queue"
        )
        with server.client(KEY_A) as a:
            refused = a.post("/v1/completions", json={"prompt": "x", "max_tokens": 4})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        with server.client(KEY_B, timeout=120) as b:
            answer = b.post("/v1/completions", json={"prompt": "x", "max_tokens": 4})
        assert answer.status_code == 200
        assert answer.json()["usage"]["completion_tokens"] == 4
        started = [answered(conn) for conn in sockets]
        assert started.count(False) == 8, started  # a's queued streams have not begun
    finally:
        close_all(sockets)
        server.stop()


@pytest.mark.timeout(300)  # some 6 MB of logprobs to fill the socket buffers: slow on 2 busy cores
def test_streams_that_are_not_read_give_their_slots_back(
    tiny_models: Path, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """One slot, held by a stream whose client never reads: once its sends have been blocked
    for stream_send_timeout it is closed, and the request waiting in line runs."""
    server = start_server(tmp_path, tiny_models, slots=1, queued=4, share=1, send_timeout=2)
    try:
        sockets.append(open_unread_stream(server, KEY_A, BULKY_STREAM))
        wait_for(lambda: answered(sockets[0]), "the stream to start")
        with server.client(KEY_A, timeout=120) as a:
            answer = a.post("/v1/completions", json={"prompt": "x", "max_tokens": 4})
        assert answer.status_code == 200
        log = server.log()
        closed = re.findall(r"(\w{8}) stream closed: its client read nothing for 2 s", log)
        assert len(closed) == 1, log
        # It counts the tokens it had sent (one per choice at most).
        assert 0 < logged_completion(server, closed[0]) <= 24, log
    finally:
        close_all(sockets)
        server.stop()


def logged_completion(server: ServerProcess, request_id: str) -> int:
    pattern = rf"^.*{request_id[:8]} POST \S+ \d+ \d+ ms .*completion=(\d+)"
    found: list[str] = []

    def logged() -> bool:
        found[:] = re.findall(pattern, server.log(), re.M)
        return bool(found)

    wait_for(logged, f"the log line of {request_id[:8]}")
    return int(found[0])


def test_a_stream_left_by_its_client_counts_the_tokens_it_sent(server: ServerProcess) -> None:
    """On the default model (slow enough that 400 tokens are not all made at once)."""
    generated = metric(server.url, "serval_generated_tokens_total")
    cancelled = metric(server.url, "serval_jobs_cancelled_total")
    received = 0
    with (
        server.client() as client,
        client.stream("POST", "/v1/completions", json=LONG_STREAM) as response,
    ):
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received == 5:
                break  # the client goes away mid-stream
    completion = logged_completion(server, request_id)
    assert 5 <= completion < 400
    wait_for(
        lambda: metric(server.url, "serval_jobs_cancelled_total") > cancelled, "the cancel count"
    )
    assert metric(server.url, "serval_generated_tokens_total") >= generated + completion


def test_an_aborted_kobold_stream_counts_the_tokens_it_sent(server: ServerProcess) -> None:
    body = {"prompt": "Once upon a time", "max_length": 400, "min_length": 400, "genkey": "count"}
    events = 0
    with (
        server.client() as client,
        client.stream("POST", "/api/extra/generate/stream", json=body) as response,
    ):
        request_id = response.headers["x-request-id"]
        last = ""
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            events, last = events + 1, line
            if events == 5:
                stopped = client.post("/api/extra/abort", json={"genkey": "count"})
                assert stopped.json()["success"] is True
    assert json.loads(last.removeprefix("data: "))["finish_reason"] == "abort"
    assert events < 400
    assert logged_completion(server, request_id) >= 5
