"""Chat templates: finding a model's template and rendering it safely.

Templates are Jinja2 run in an immutable sandbox with a time budget: a template that loops for
too long, builds huge strings or reads attributes it should not is stopped with a
:class:`~common.errors.TemplateError`, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from common.chat.sandbox import (
    MAX_TEXT_CHARS,
    BudgetedEnvironment,
    RenderBudget,
    TemplateTimeout,
)
from common.errors import NotFoundError, TemplateError
from common.model_files import gguf_files, gguf_metadata, read_json
from common.paths import safe_child

T = TypeVar("T")

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates"
# Renders run on their own few threads, never the default pool that model loads and file reads
# use: a render that overruns its budget inside one long step is abandoned there, and at
# worst these threads are busy, not the server.
RENDER_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="serval-template")
ABANDON_AFTER = 1.0  # seconds past its budget after which the caller stops waiting for a render


async def run_render(work: Callable[..., T], *args: Any, timeout: float) -> T:
    """``work(*args)`` (a render with a ``timeout`` budget) on the template threads; a
    :class:`TemplateError` if it has not returned shortly after its budget."""
    future = asyncio.get_running_loop().run_in_executor(
        RENDER_THREADS, functools.partial(work, *args)
    )
    try:
        return await asyncio.wait_for(future, timeout + ABANDON_AFTER)
    except TimeoutError:
        raise TemplateError(
            f"Template error: the template ran longer than {timeout:g} s",
            code="template_timeout",
        ) from None


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template and where it came from."""

    name: str
    source: str
    _template: jinja2.Template
    _env: BudgetedEnvironment

    @classmethod
    def from_string(cls, source: str, name: str = "custom") -> ChatTemplate:
        env = BudgetedEnvironment()
        try:
            template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"Template {name!r} has a syntax error: {exc}") from None
        return cls(name=name, source=source, _template=template, _env=env)

    def render(self, variables: dict[str, Any], timeout: float = 2.0) -> str:
        """Render with ``variables``; raises :class:`TemplateError` with the template's message.

        Blocking: ``common.chat.prompt.render_prompt`` calls it on the template threads.
        """
        budget = RenderBudget(timeout)
        self._env.budget = budget
        pieces: list[str] = []
        size = 0
        try:
            for piece in self._template.generate(**variables):
                pieces.append(piece)
                size += len(piece)
                if size > MAX_TEXT_CHARS:
                    raise TemplateError("Template error: the rendered prompt is too large")
                budget.check()
        except TemplateError:
            raise
        except TemplateTimeout as exc:
            raise TemplateError(f"Template error: {exc}", code="template_timeout") from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"Template error: {exc}") from None
        except Exception as exc:  # a template may fail in many ways; all are the caller's error
            raise TemplateError(f"Template error: {type(exc).__name__}: {exc}") from None
        finally:
            self._env.budget = None
        return "".join(pieces)


def _from_json_field(value: Any, wanted: str | None) -> str | None:
    """A template from tokenizer_config's ``chat_template``: a string, or a list of named ones."""
    if isinstance(value, str):
        return value if wanted is None else None
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        if wanted is not None:
            return named.get(wanted)
        return named.get("default") or next(iter(named.values()), None)
    return None


def list_templates(directory: Path = TEMPLATE_DIR) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(path.stem for path in directory.glob("*.jinja"))


def load_named_template(name: str, directory: Path = TEMPLATE_DIR) -> ChatTemplate:
    """``templates/<name>.jinja``; the name cannot leave the folder."""
    path = safe_child(directory, f"{name}.jinja", what="template")
    if not path.is_file():
        raise NotFoundError(f"Template {name!r} not found in {directory}/.", param="name")
    return ChatTemplate.from_string(path.read_text(encoding="utf-8"), name=name)


def find_model_template(
    model_dir: Path, prompt_template: str | None, directory: Path = TEMPLATE_DIR
) -> ChatTemplate | None:
    """The template for a model: the configured one, else the one its folder ships."""
    tokenizer_config = read_json(model_dir / "tokenizer_config.json")
    if prompt_template:
        if (directory / f"{prompt_template}.jinja").is_file():
            return load_named_template(prompt_template, directory)
        named = _from_json_field(tokenizer_config.get("chat_template"), prompt_template)
        if named:
            return ChatTemplate.from_string(named, name=prompt_template)
        raise NotFoundError(f"Template {prompt_template!r} not found.", param="prompt_template")
    for filename in ("tabby_template.jinja", "chat_template.jinja"):
        path = model_dir / filename
        if path.is_file():
            return ChatTemplate.from_string(path.read_text(encoding="utf-8"), name=model_dir.name)
    for source in (
        read_json(model_dir / "chat_template.json").get("chat_template"),
        tokenizer_config.get("chat_template"),
    ):
        text = _from_json_field(source, None)
        if text:
            return ChatTemplate.from_string(text, name=model_dir.name)
    for gguf in gguf_files(model_dir):  # a GGUF file carries its template in its metadata
        stored = gguf_metadata(gguf).get("tokenizer.chat_template")
        if isinstance(stored, str) and stored:
            return ChatTemplate.from_string(stored, name=model_dir.name)
    return None
