"""Helpers for the web console's browser tests (Playwright with Debian's Chromium)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support.server import ADMIN_KEY, ROOT, ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused on a closed
# network, and its start-up waits on them.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 390, "height": 844}  # a phone: the console must be usable this narrow
ARTIFACTS = ROOT / "test-artifacts" / "console"


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/console/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, server: ServerProcess, key: str) -> None:
    page.goto(f"{server.url}/")
    page.fill("#key-input", key)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#tabs", state="visible")


def metrics_status(server: ServerProcess) -> int:
    """What the real server answers on /metrics (404 until that route exists)."""
    return httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ).status_code
