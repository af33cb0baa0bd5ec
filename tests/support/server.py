"""Start the real Serval server in a subprocess on a free port, for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.support.files import models_with_templates

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "admin-key-for-tests-0123456789abcdef"
API_KEY = "api-key-for-tests-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_refused(response: httpx.Response, status: int, param: str) -> None:
    """An error answer of ``status`` in the OpenAI shape that names the ``param`` at fault."""
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def run_main(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``main.py`` with ``args``, run to its exit in ``cwd``; its output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


class ServerProcess:
    """``python main.py`` run in ``workdir`` with its own config and keys (``entry``: another
    launcher of main.py, such as the stand-in one for the GPU engines)."""

    def __init__(
        self,
        workdir: Path,
        config: dict,
        keys: bool = True,
        env: dict | None = None,
        entry: Path = ROOT / "main.py",
    ):
        self.workdir = workdir
        self.entry = entry
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {**config, "network": {**config.get("network", {}), "port": self.port}}
        (workdir / "config.yml").write_text(yaml.safe_dump(config))
        if keys:
            (workdir / "api_tokens.yml").write_text(
                yaml.safe_dump({"api_key": API_KEY, "admin_key": ADMIN_KEY})
            )
        self.log_path = workdir / "server.log"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, wait_for_model: bool = True, timeout: float = 120) -> ServerProcess:
        return self.launch().wait_ready(wait_for_model, timeout)

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it (several servers can start at once)."""
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(self.entry)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        return self

    def wait_ready(self, wait_for_model: bool = True, timeout: float = 120) -> ServerProcess:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                response = httpx.get(f"{self.url}/health", timeout=2)
                if response.status_code == 200 or not wait_for_model:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, key: str = API_KEY, timeout: float = 60) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def admin(self, timeout: float = 60) -> httpx.Client:
        return self.client(ADMIN_KEY, timeout)


def start_with_templates(
    tiny_model: Path, templates: dict[str, str], model_name: str, workdir: Path
) -> ServerProcess:
    """A server on a model folder holding ``tiny_model`` once per chat template (see
    :func:`~tests.support.files.models_with_templates`), ``model_name`` loaded; a template may
    run for a second."""
    base = models_with_templates(tiny_model, workdir / "models", templates)
    config = {
        "model": {"model_dir": str(base), "model_name": model_name},
        "embeddings": {"embedding_model_name": None},
        "limits": {"template_timeout": 1.0},
    }
    return ServerProcess(workdir / "server", config).start()
