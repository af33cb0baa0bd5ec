"""Playwright driving Debian's headless Chromium against a real server of its own.

The console loads and unloads models, so these tests get a dedicated server instead of the
shared session one. Chromium comes from Debian (``scripts/install_chromium.sh``, run by
``test.sh``); Playwright's own browser download is never used. Without Playwright or Chromium
the tests are skipped on a developer's machine and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS, VIEWPORT
from tests.support.server import ROOT, ServerProcess

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="package")  # torn down before later packages (it holds an event loop)
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install '.[dev]' (test.sh does it)")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: run scripts/install_chromium.sh (test.sh does it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of the console tests' own, with the default model and the OpenAI API."""
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.fail("the default model is missing: run ./test.sh (it fetches it)")
    config = {
        "network": {"api_servers": ["OAI"], "sse_ping_interval": 1},
        "model": {
            "model_dir": str(ROOT / "models"),
            "model_name": DEFAULT_MODEL.name,
            "backend": "transformers",
        },
    }
    process = ServerProcess(tmp_path_factory.mktemp("console-server"), config).start()
    yield process
    process.stop()


@pytest.fixture
def loaded_server(console_server: ServerProcess) -> ServerProcess:
    """The console server with the default model loaded (a test before may have unloaded it)."""
    with console_server.admin() as client:
        if client.get("/v1/model").status_code != 200:
            body = {"model_name": DEFAULT_MODEL.name}
            with client.stream("POST", "/v1/model/load", json=body) as response:
                assert response.status_code == 200
                for _ in response.iter_lines():
                    pass
        assert client.get("/v1/model").status_code == 200
    return console_server


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own session storage) that fails the test on any JavaScript error."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
