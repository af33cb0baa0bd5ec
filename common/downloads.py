"""Downloading a model or LoRA repository from a Hugging Face hub into ``model_dir``/``lora_dir``.

The hub is reached through ``huggingface_hub`` (its endpoint follows ``HF_ENDPOINT``). Files go
into a hidden folder next to the target, are checked (sizes against the listing, safetensors
headers), and only then is the folder renamed into place, so a model list never shows a partial
download. A cancelled or failed download leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from loguru import logger
from tqdm.std import tqdm

from common.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ServalError,
)
from common.model_files import check_safetensors
from common.paths import safe_child

RepoType = Literal["model", "lora"]
LOG_EVERY_SECONDS = 5.0


class HubError(ServalError, status=502, code="hub_error"):
    """The hub failed during the transfer (not the client's fault)."""


class GatedRepoRefused(PermissionDeniedError, code="gated_repo"):
    """A gated repository whose terms the token's owner has not accepted on the hub."""


@dataclass(frozen=True)
class DownloadPlan:
    """What to fetch and where: checked before any byte is transferred."""

    repo_id: str
    revision: str | None
    token: str | None
    target: Path
    files: tuple[tuple[str, int], ...]  # (path in repo, size in bytes)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


@dataclass(frozen=True)
class DownloadProgress:
    """One step of a download; the last one has status ``finished`` and ``download_path``."""

    repo_id: str
    files: int
    files_done: int
    bytes_total: int
    bytes_done: int
    bytes_per_second: float
    file: str | None = None
    status: Literal["processing", "finished"] = "processing"
    download_path: str | None = None


class _Cancelled(Exception):
    pass


def _hub_error(exc: Exception, repo_id: str) -> ServalError:
    """The hub's refusal as the client's error: what it means, not how the hub said it."""
    from huggingface_hub import errors as hub

    # (what the hub raised, the client's error, the parameter to blame, the message); the first
    # that matches wins: a gated repository is also a repository not found.
    refusals: tuple[tuple[type[Exception], type[ServalError], str, str], ...] = (
        (hub.HFValidationError, BadRequestError, "repo_id", "Invalid repo_id or revision: {exc}"),
        (
            hub.GatedRepoError,
            GatedRepoRefused,
            "token",
            "{repo_id} is gated: accept its terms on the hub and pass a token that may read it.",
        ),
        (hub.RevisionNotFoundError, NotFoundError, "revision", "{repo_id} has no such revision."),
        (
            hub.RepositoryNotFoundError,
            NotFoundError,
            "repo_id",
            "Repository {repo_id!r} not found on the hub (or it is private and needs a token).",
        ),
    )
    for hub_class, error_class, param, message in refusals:
        if isinstance(exc, hub_class):
            return error_class(message.format(repo_id=repo_id, exc=exc), param=param)
    if isinstance(exc, hub.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return PermissionDeniedError("The hub refused the token.", param="token")
        return HubError(f"The hub answered {status}: the download of {repo_id} failed.")
    return HubError(f"The download of {repo_id} failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class DownloadSource:
    """What to fetch: the fields ``POST /v1/download`` and ``main.py download`` both take."""

    repo_id: str
    folder_name: str | None = None  # default: the repository's name
    revision: str | None = None
    token: str | None = None
    include: list[str] | None = None  # glob patterns
    exclude: list[str] | None = None

    @classmethod
    def read(cls, values: object) -> DownloadSource:
        """From an object with these attributes: the request body, the parsed command line."""
        return cls(**{field.name: getattr(values, field.name) for field in fields(cls)})


def plan_download(base: Path, source: DownloadSource) -> DownloadPlan:
    """List the repository and choose its files. Blocking (hub requests): call it in a thread.

    400 for a bad name or an empty selection, 409 when the folder exists, 403/404 as the hub says.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    name = source.folder_name or source.repo_id.rstrip("/").split("/")[-1]
    target = safe_child(base, name, what="folder_name")
    if target.exists():
        raise ConflictError(f"{name!r} already exists in {base}/.", param="folder_name")
    try:
        entries = list(
            HfApi(token=source.token).list_repo_tree(
                source.repo_id, recursive=True, revision=source.revision, repo_type="model"
            )
        )
    except Exception as exc:
        raise _hub_error(exc, source.repo_id) from None
    files = [entry for entry in entries if isinstance(entry, RepoFile)]
    chosen = list(
        filter_repo_objects(
            files,
            allow_patterns=source.include or None,
            ignore_patterns=source.exclude or None,
            key=_path,
        )
    )
    if not chosen:
        include, exclude = source.include or ["*"], source.exclude or []
        raise BadRequestError(
            f"No file of {source.repo_id} matches include {include} and exclude {exclude}.",
            param="include",
        )
    for entry in chosen:  # the hub's paths are relative; refuse any that is not
        safe_child(target, entry.path, what="file in the repository")
    return DownloadPlan(
        repo_id=source.repo_id,
        revision=source.revision,
        token=source.token,
        target=target,
        files=tuple((entry.path, int(entry.size)) for entry in chosen),
    )


def _path(entry: Any) -> str:
    return str(entry.path)


def _byte_counter(on_bytes: Callable[[int], None]) -> type[tqdm]:
    """A silent progress bar class for ``huggingface_hub`` that reports each chunk."""

    class ByteCounter(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "disable": True})

        def update(self, n: float | None = 1) -> bool | None:
            on_bytes(int(n or 0))
            return None

    return ByteCounter


def _fetch_files(plan: DownloadPlan, staging: Path, transfer: _Transfer) -> None:
    """Download every file of ``plan`` into ``staging``, then check it. Blocking."""
    from huggingface_hub import hf_hub_download

    counter = _byte_counter(transfer.add_bytes)
    for path, _ in plan.files:
        try:
            hf_hub_download(
                plan.repo_id,
                path,
                revision=plan.revision,
                token=plan.token,
                local_dir=staging,
                tqdm_class=counter,
            )
        except _Cancelled:
            raise
        except Exception as exc:
            raise _hub_error(exc, plan.repo_id) from None
        transfer.file_done()
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
    for path, size in plan.files:
        file = staging / path
        if file.stat().st_size != size:
            raise HubError(f"{path} arrived with {file.stat().st_size} bytes, not {size}.")
        if file.suffix == ".safetensors":
            check_safetensors(file)


class _Transfer:
    """Byte and file counts shared by the download thread and the event loop."""

    def __init__(self, plan: DownloadPlan) -> None:
        self.plan = plan
        self.cancelled = threading.Event()
        self.bytes_done = 0
        self.files_done = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def add_bytes(self, count: int) -> None:
        """Called for every chunk; raising here is how a cancel stops the download thread."""
        if self.cancelled.is_set():
            raise _Cancelled
        with self._lock:
            self.bytes_done += count

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def snapshot(self) -> DownloadProgress:
        with self._lock:
            done, files_done = self.bytes_done, self.files_done
        elapsed = max(time.monotonic() - self.started, 1e-6)
        current = self.plan.files[files_done][0] if files_done < len(self.plan.files) else None
        return DownloadProgress(
            repo_id=self.plan.repo_id,
            files=len(self.plan.files),
            files_done=files_done,
            bytes_total=self.plan.total_bytes,
            bytes_done=done,
            bytes_per_second=round(done / elapsed, 1),
            file=current,
        )


_in_progress: set[Path] = set()


async def download(plan: DownloadPlan, interval: float = 0.5) -> AsyncIterator[DownloadProgress]:
    """Run ``plan``, yielding progress every ``interval`` seconds and a last ``finished`` event.

    Closing the iterator (a client that went away) cancels the transfer. The download thread
    cleans up by itself, so nothing here needs to await once the consumer is gone.
    """
    if plan.target in _in_progress:
        raise ConflictError(f"{plan.target.name!r} is being downloaded already.")
    _in_progress.add(plan.target)
    transfer = _Transfer(plan)
    size_mb = plan.total_bytes / 1e6
    logger.info(f"downloading {plan.repo_id}: {len(plan.files)} files, {size_mb:.1f} MB")
    worker = asyncio.ensure_future(asyncio.to_thread(_download_into_place, plan, transfer))
    worker.add_done_callback(lambda _: _in_progress.discard(plan.target))
    worker.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        logged = time.monotonic()
        while not worker.done():
            await asyncio.wait({worker}, timeout=interval)
            event = transfer.snapshot()
            if time.monotonic() - logged >= LOG_EVERY_SECONDS:
                logged = time.monotonic()
                logger.info(_describe(event))
            if not worker.done():
                yield event
        worker.result()  # raises the transfer's error
        event = replace(transfer.snapshot(), status="finished", download_path=str(plan.target))
        logger.info(f"downloaded {plan.repo_id} into {plan.target} ({_describe(event)})")
        yield event
    finally:
        if not worker.done():
            logger.info(f"download of {plan.repo_id} cancelled")
        transfer.cancelled.set()


def _download_into_place(plan: DownloadPlan, transfer: _Transfer) -> None:
    """Fetch into a hidden folder beside the target and rename it into place; on any failure
    or cancel, remove it. Blocking."""
    staging = plan.target.parent / f".serval-download-{plan.target.name}-{secrets.token_hex(4)}"
    try:
        _fetch_files(plan, staging, transfer)
        if transfer.cancelled.is_set():
            raise _Cancelled
        if plan.target.exists():
            raise ConflictError(f"{plan.target.name!r} appeared while downloading.")
        staging.rename(plan.target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _describe(event: DownloadProgress) -> str:
    return (
        f"{event.files_done}/{event.files} files, {event.bytes_done / 1e6:.1f}"
        f"/{event.bytes_total / 1e6:.1f} MB, {event.bytes_per_second / 1e6:.2f} MB/s"
    )
