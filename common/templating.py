"""Chat templates: finding a model's template and rendering it safely.

Templates are Jinja2 run in an immutable sandbox with a time budget: a template that loops for
too long, builds huge strings or reads attributes it should not is stopped with a
:class:`~common.errors.TemplateError`, and the server keeps serving.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from common.errors import NotFoundError, TemplateError
from common.paths import safe_child

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
MAX_OUTPUT_CHARS = 4_000_000
MAX_SEQUENCE_ITEMS = 1_000_000


class TemplateTimeout(Exception):
    pass


class _Budget:
    """A deadline shared by everything one render does."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateTimeout(f"the template ran longer than {self.seconds:g} s")


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """A sandbox that checks the render's budget on every call and bounds big operations."""

    intercepted_binops = frozenset({"*", "**", "+"})
    _local = threading.local()

    @property
    def budget(self) -> _Budget | None:
        return getattr(self._local, "budget", None)

    @budget.setter
    def budget(self, value: _Budget | None) -> None:
        self._local.budget = value

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._tick()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self._tick()
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise TemplateError("Template error: exponent too large")
        if operator == "*":
            sequence, times = (left, right) if isinstance(right, int) else (right, left)
            sized = isinstance(sequence, str | list | tuple) and isinstance(times, int)
            if sized and len(sequence) * times > MAX_OUTPUT_CHARS:
                raise TemplateError("Template error: sequence repetition too large")
        return super().call_binop(context, operator, left, right)

    def _tick(self) -> None:
        if self.budget is not None:
            self.budget.check()


def _budgeted_range(env: _BudgetedEnvironment) -> Any:
    def budgeted_range(*args: int) -> Iterator[int]:
        values = range(*args)
        if len(values) > MAX_SEQUENCE_ITEMS:
            raise TemplateError("Template error: range too large")
        for index, value in enumerate(values):
            if index % 256 == 0:
                env._tick()
            yield value

    return budgeted_range


def _raise_exception(message: str) -> None:
    raise TemplateError(f"Template error: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, **_: Any) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template and where it came from."""

    name: str
    source: str
    _template: jinja2.Template
    _env: _BudgetedEnvironment

    @classmethod
    def from_string(cls, source: str, name: str = "custom") -> ChatTemplate:
        env = _BudgetedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], autoescape=False
        )
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.globals["range"] = _budgeted_range(env)
        env.filters["tojson"] = _tojson
        try:
            template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"Template {name!r} has a syntax error: {exc}") from None
        return cls(name=name, source=source, _template=template, _env=env)

    def render(self, variables: dict[str, Any], timeout: float = 2.0) -> str:
        """Render with ``variables``; raises :class:`TemplateError` with the template's message.

        Blocking: call it from a worker thread (``asyncio.to_thread``).
        """
        budget = _Budget(timeout)
        self._env.budget = budget
        pieces: list[str] = []
        size = 0
        try:
            for piece in self._template.generate(**variables):
                pieces.append(piece)
                size += len(piece)
                if size > MAX_OUTPUT_CHARS:
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


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
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
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
        _read_json(model_dir / "chat_template.json").get("chat_template"),
        tokenizer_config.get("chat_template"),
    ):
        text = _from_json_field(source, None)
        if text:
            return ChatTemplate.from_string(text, name=model_dir.name)
    return None
