"""A local HTTP server that serves test images, slow answers, huge ones and redirects.

Started by the test itself on a loopback port (no network): ``/image.png`` serves the bytes
given, ``/slow`` waits before answering, ``/huge`` declares more bytes than any limit,
``/endless`` streams without a length, ``/hop/N`` redirects N times before the image, and
``/to?url=U`` redirects to ``U``.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    """A PNG file of one colour."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def _handler(image: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/image.png":
                self._send(image)
            elif parts.path == "/slow":
                time.sleep(5)
                self._send(image)
            elif parts.path == "/huge":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(1 << 40))
                self.end_headers()
            elif parts.path == "/endless":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                try:
                    for _ in range(4096):
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass
            elif parts.path.startswith("/hop/"):
                left = int(parts.path.rsplit("/", 1)[1])
                self._redirect(f"/hop/{left - 1}" if left > 1 else "/image.png")
            elif parts.path == "/to":
                self._redirect(parse_qs(parts.query)["url"][0])
            else:
                self.send_error(404)

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def image_host(image: bytes) -> Iterator[str]:
    """Serve ``image`` (and the other routes) on a loopback port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(image))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
