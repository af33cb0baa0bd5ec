"""Serval's entry point: command line -> config -> logging -> app -> uvicorn.

python main.py [--config PATH] [--<key> VALUE ...]      run the server
python main.py export-config [--export-path PATH]       write config_sample.yml
python main.py export-openapi [--export-path PATH]      write the OpenAPI schema
python main.py add-api-key                              append a new api key
python main.py download REPO_ID [--folder-name NAME ...] download a repository from the hub
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import typing
from pathlib import Path
from typing import Any

from common.config import ConfigError, ServalConfig, export_sample, load_config, sections

ACTIONS = ("serve", "export-config", "export-openapi", "add-api-key", "download")
KEYS_FILE = Path("api_tokens.yml")


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Serval: an OpenAI and KoboldAI compatible server for ExLlamaV2 models.",
    )
    parser.add_argument("action", nargs="?", default="serve", choices=ACTIONS)
    parser.add_argument("--config", type=Path, help="config file (default: config.yml if present)")
    parser.add_argument("--export-path", type=Path, help="where export-* actions write")
    hub = parser.add_argument_group("download (python main.py download REPO_ID)")
    hub.add_argument("repo_id", nargs="?", help="the repository to download: owner/name")
    hub.add_argument("--repo-type", choices=("model", "lora"), default="model")
    hub.add_argument("--folder-name", help="folder to create (default: the repository's name)")
    hub.add_argument("--revision", help="branch, tag or commit (default: main)")
    hub.add_argument("--token", help="hub token for private or gated repositories")
    hub.add_argument("--include", nargs="+", help="glob patterns of files to fetch")
    hub.add_argument("--exclude", nargs="+", help="glob patterns of files to leave out")
    for section_name, section in sections().items():
        group = parser.add_argument_group(section_name)
        for key, field in section.model_fields.items():
            flag = f"--{key.replace('_', '-')}"
            help_text = field.description or ""
            if field.annotation is bool:
                group.add_argument(flag, dest=key, nargs="?", const="true", help=help_text)
            elif _is_list(field.annotation):
                group.add_argument(flag, dest=key, nargs="+", help=help_text)
            else:
                group.add_argument(flag, dest=key, help=help_text)
    return parser


def cli_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from common.config import _parse_scalar

    found: dict[str, dict[str, Any]] = {}
    for section_name, section in sections().items():
        for key in section.model_fields:
            raw = getattr(args, key, None)
            if raw is None:
                continue
            if isinstance(raw, list):
                value: Any = [_parse_scalar(section_name, key, item) for item in raw]
                value = [v for item in value for v in (item if isinstance(item, list) else [item])]
            else:
                value = _parse_scalar(section_name, key, raw)
            found.setdefault(section_name, {})[key] = value
    return found


def port_is_free(host: str, port: int) -> str | None:
    """None when ``host:port`` can be bound, else why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use: stop the other server or pass --port"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def serve(config: ServalConfig) -> int:
    import uvicorn
    from loguru import logger

    from backends.registry import log_engine_availability
    from common.auth import Authenticator, KeyStore, describe_keys
    from common.errors import ServalError
    from common.model import ModelContainer
    from common.sampling import load_preset
    from common.startup import apply_startup_settings
    from endpoints.protocol import with_header_timeout
    from endpoints.server import create_app
    from endpoints.state import ServerState

    network = config.network
    problem = port_is_free(network.host, network.port)
    if problem:
        print(f"serval: {problem}", file=sys.stderr)
        return 1
    overrides = None
    if config.sampling.override_preset:
        try:
            overrides = load_preset(config.sampling.override_preset)
        except ServalError as exc:
            print(f"serval: sampling.override_preset: {exc.message}", file=sys.stderr)
            return 1
    store: KeyStore | None = None
    if network.disable_auth:
        logger.warning("!" * 72)
        logger.warning("AUTHENTICATION IS DISABLED: anyone who can reach this port is an admin.")
        logger.warning("!" * 72)
    else:
        store = KeyStore(KEYS_FILE)
        try:
            created = store.load_or_create()
        except (OSError, ValueError) as exc:
            print(f"serval: cannot use {KEYS_FILE}: {exc}", file=sys.stderr)
            return 1
        if created:
            logger.info(f"new random keys were written to {KEYS_FILE.resolve()} (mode 0600)")
        for line in describe_keys(store.keys):
            logger.info(line)
        logger.info(f"the whole keys are in {KEYS_FILE.resolve()}: read them there")
    log_engine_availability()
    apply_startup_settings(config)
    state = ServerState(config=config, auth=Authenticator(store), container=ModelContainer(config))
    if overrides is not None:
        state.overrides.set(overrides)
        logger.info(f"sampler override preset {overrides.name!r} applied")
    app = create_app(state)
    url = f"http://{network.host}:{network.port}"
    logger.info(f"Serval listening on {url} (API docs at {url}/docs)")
    uvicorn.run(
        app,
        host=network.host,
        port=network.port,
        http=with_header_timeout(network.header_timeout),
        limit_concurrency=network.max_connections,
        log_config=None,
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
    )
    return 0


def export_openapi(config: ServalConfig, path: Path) -> None:
    from common.auth import Authenticator
    from common.model import ModelContainer
    from endpoints.server import create_app
    from endpoints.state import ServerState

    state = ServerState(config=config, auth=Authenticator(None), container=ModelContainer(config))
    schema = create_app(state, start_model=False).openapi()
    path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")


def download_from_hub(config: ServalConfig, args: argparse.Namespace) -> int:
    """The ``download`` action: the same download as ``POST /v1/download``, progress in the log."""
    import asyncio

    from common.downloads import DownloadSource, download, plan_download
    from common.errors import ServalError

    if not args.repo_id:
        print(
            "serval: download needs a repository: python main.py download OWNER/NAME",
            file=sys.stderr,
        )
        return 2
    base = Path(config.lora.lora_dir if args.repo_type == "lora" else config.model.model_dir)
    base.mkdir(parents=True, exist_ok=True)

    async def run() -> str:
        plan = await asyncio.to_thread(plan_download, base, DownloadSource.read(args))
        path = ""
        async for event in download(plan, interval=1.0):
            path = event.download_path or path
        return path

    try:
        path = asyncio.run(run())
    except ServalError as exc:
        print(f"serval: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("serval: download cancelled; nothing was kept", file=sys.stderr)
        return 130
    print(f"downloaded into {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, warnings = load_config(args.config, cli_values(args))
    except ConfigError as exc:
        print(f"serval: config error: {exc}", file=sys.stderr)
        return 2

    from loguru import logger

    from common.logging import setup_logging

    setup_logging(config.logging.log_level)
    for warning in warnings:
        logger.warning(warning)
    if args.action == "export-config":
        target = args.export_path or Path("config_sample.yml")
        target.write_text(export_sample(), encoding="utf-8")
        print(f"wrote {target}")
        return 0
    if args.action == "export-openapi":
        target = args.export_path or Path("openapi.json")
        export_openapi(config, target)
        print(f"wrote {target}")
        return 0
    if args.action == "add-api-key":
        from common.auth import KeyStore

        store = KeyStore(KEYS_FILE)
        store.load_or_create()
        print(store.add_api_key())
        return 0
    if args.action == "download":
        return download_from_hub(config, args)
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
