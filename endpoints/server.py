"""The FastAPI application: routers per ``network.api_servers``, middleware, error handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from loguru import logger

from common.errors import ServalError
from common.progress import shown_in_console
from endpoints.Anthropic import messages as anthropic_messages
from endpoints.console import mount_console
from endpoints.core import (
    downloads,
    embeddings,
    health,
    loras,
    metrics,
    models,
    sampling,
    templates,
    tokens,
)
from endpoints.cors import install_cors
from endpoints.errors import install_error_handlers
from endpoints.Kobold import router as kobold
from endpoints.middleware import RequestContextMiddleware
from endpoints.OAI import chat, completions, responses
from endpoints.OAI import embeddings as oai_embeddings
from endpoints.request_body import BodyLimits, RequestBodyMiddleware
from endpoints.state import ServerState

VERSION = "0.1.0"


async def load_startup_model(state: ServerState) -> None:
    """Load ``model.model_name`` (and ``lora.loras``) in the background; requests wait for it
    instead of failing."""
    container = state.container
    name = container.startup_model_name()
    if not name:
        return
    if name != state.config.model.model_name:
        logger.info(
            f"serving {state.config.model.model_name} from its GGUF file ({name}) on llama.cpp, "
            "the fastest engine on this machine (backend: transformers serves the HF folder)"
        )
    logger.info(f"loading {name} from {container.model_dir}/")
    try:
        plan = container.plan_load(name)
        async for _ in shown_in_console(name, container.load(plan)):
            pass
    except Exception as exc:
        message = getattr(exc, "message", str(exc))
        logger.error(f"start-up model {name!r} was not loaded: {message}")
        logger.error("the server runs without a model; load one with POST /v1/model/load")
        return
    logger.info(f"model {name} is ready")


async def load_startup_embeddings(state: ServerState) -> None:
    """Load ``embeddings.embedding_model_name`` in the background; /health does not wait."""
    name = state.config.embeddings.embedding_model_name
    if not name:
        return
    try:
        await state.embeddings.load(name)
    except ServalError as exc:
        logger.warning(f"embedding model {name!r} was not loaded: {exc.message}")
        logger.warning(
            "/v1/embeddings answers 503 until an admin loads one with "
            "POST /v1/model/embedding/load (embeddings.embedding_model_name: null silences this)"
        )


def _start(state: ServerState, work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    state.background_tasks.add(task)
    task.add_done_callback(state.background_tasks.discard)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.serval
    _start(state, load_startup_model(state))
    _start(state, load_startup_embeddings(state))
    try:
        yield
    finally:
        for pending in list(state.background_tasks):
            pending.cancel()
        if state.container.loaded:
            await state.container.unload()
        state.embeddings.close()


def create_app(state: ServerState, start_model: bool = True) -> FastAPI:
    config = state.config
    app = FastAPI(
        title="Serval",
        version=VERSION,
        summary="OpenAI- and KoboldAI-compatible inference server for ExLlamaV2 models",
        lifespan=lifespan if start_model else None,
    )
    app.state.serval = state
    install_error_handlers(app, config.network.send_tracebacks)
    for module in (
        health,
        metrics,
        models,
        embeddings,
        loras,
        tokens,
        templates,
        sampling,
        downloads,
    ):
        app.include_router(module.router)
    if "OAI" in config.network.api_servers:
        app.include_router(completions.router)
        app.include_router(chat.router)
        app.include_router(responses.router)
        app.include_router(oai_embeddings.router)
        app.include_router(anthropic_messages.router)  # Anthropic's Messages API
    if "Kobold" in config.network.api_servers:
        kobold.mount(app)
    if config.network.web_console:
        mount_console(app)  # after the API routes, so it never answers one of their paths
    app.add_middleware(  # innermost: its refusals still get CORS headers and a log line
        RequestBodyMiddleware,
        auth=state.auth,
        limits=BodyLimits.of(
            config.network.max_body_size, config.network.body_timeout, config.limits
        ),
    )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=state.metrics,
        log_requests=config.logging.log_requests,
    )
    install_cors(app, config.network.cors_origins, state.auth.disabled)
    return app
