"""A page served from another origin calls Serval with a key, as Kobold Lite's hosted page and
other browser clients do: CORS lets it by default (keys travel in headers, never cookies)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import API_KEY, ServerProcess, free_port

PAGE = """<!doctype html>
<html><body><pre id="out">running</pre><script>
const serval = new URLSearchParams(location.search).get("serval");
const key = new URLSearchParams(location.search).get("key");
async function run() {
  const headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"};
  const models = await (await fetch(serval + "/v1/models", {headers})).json();
  const chat = await fetch(serval + "/v1/chat/completions", {
    method: "POST", headers,
    body: JSON.stringify({model: models.data[0].id, max_tokens: 3,
                          messages: [{role: "user", content: "Hi"}]}),
  });
  const answer = await chat.json();
  const refused = await fetch(serval + "/v1/models");  // no key: the page can read why
  return {model: models.data[0].id, status: chat.status,
          text: answer.choices[0].message.content, refused: refused.status,
          refusal: (await refused.json()).error.type};
}
run().then(r => { document.getElementById("out").textContent = JSON.stringify(r); })
     .catch(e => { document.getElementById("out").textContent = "failed: " + e; });
</script></body></html>
"""


@pytest.fixture
def other_origin(tmp_path: Path) -> Iterator[str]:
    """``http://localhost:<port>``: another origin than the server's ``http://127.0.0.1``."""
    (tmp_path / "client.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=pages.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{pages.server_address[1]}"
    pages.shutdown()
    pages.server_close()


def test_a_page_on_another_origin_calls_serval_with_a_key(
    page: Any, loaded_server: ServerProcess, other_origin: str
) -> None:
    page.goto(f"{other_origin}/client.html?serval={loaded_server.url}&key={API_KEY}")
    page.wait_for_function("document.getElementById('out').textContent !== 'running'")
    result = page.text_content("#out")
    assert not result.startswith("failed"), result  # a CORS block reads "TypeError: Failed ..."
    assert '"status":200' in result and '"refused":401' in result
    assert '"refusal":"authentication_error"' in result
