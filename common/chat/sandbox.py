"""The Jinja sandbox chat templates run in: a time budget no template can escape, and no
operation that can build a huge string.

A template's Python-level work goes through this environment: every call, attribute and item
read, intercepted operator and loop step checks the render's deadline (loops are rewritten when
the template is parsed so that their iterable ticks on every step, since a loop that calls
nothing would never check it otherwise). Everything that can grow text or sequences (``+``,
``~``, ``*``, ``%``, ``str.format``, string methods, filters, block captures, ``{{ }}``) is
size-checked *before* it allocates, so a template cannot take 200 MB in one step between two
checks. Filters and globals that are unbounded by nature (``lipsum``, ``wordwrap``) are capped.
"""

from __future__ import annotations

import functools
import json
import re
import string
import threading
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, ValuesView
from datetime import datetime
from typing import Any

from jinja2 import nodes
from jinja2.ext import loopcontrols
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from common.errors import TemplateError

MAX_TEXT_CHARS = 4_000_000  # the longest string (and rendered prompt) a template may make
MAX_SEQUENCE_ITEMS = 1_000_000  # the longest list or range
MAX_WRITTEN_ITEMS = 200_000  # the most items a list or dict may have when written out as text
MAX_INT_BITS = 1_000_000  # the largest integer a template may compute
MAX_WRAP_CHARS = (
    20_000  # wordwrap is slow Python (~0.2 s for this much): the longest text it may wrap
)
MAX_JSON_INDENT = 16
MAX_LIPSUM = 100  # paragraphs, and words per paragraph
TICK_FILTER = "serval_ticking"
CONCAT_FILTER = "serval_concat"


class TemplateTimeout(Exception):
    pass


class RenderBudget:
    """A deadline shared by everything one render does."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateTimeout(f"the template ran longer than {self.seconds:g} s")


def _refuse(what: str) -> TemplateError:
    return TemplateError(f"Template error: {what} too large", code="template_too_large")


def text_size(value: Any, limit: int = MAX_TEXT_CHARS) -> int:
    """About how long ``str(value)`` is; stops counting once past ``limit``.

    Containers are walked without recursion and without building their text, since a list
    of a million references to one long string is small in memory but not as text (nor is a
    list that holds itself twice, sixty levels deep). A value of more than
    :data:`MAX_WRITTEN_ITEMS` items counts as too long.
    """
    total = visited = 0
    pending: list[Any] = [value]
    while pending and total <= limit:
        visited += 1
        if visited > MAX_WRITTEN_ITEMS:
            return limit + 1
        item = pending.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + 3
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset | KeysView | ValuesView | ItemsView):
            total += 2 + 2 * len(item)
            pending.extend(item)
        elif isinstance(item, Namespace):
            pending.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 32  # numbers, undefined, loop objects: short texts
    return total


def _check_text(*values: Any, factor: int = 1, extra: int = 0, what: str = "text") -> None:
    """Refuse when the text of ``values``, times ``factor``, plus ``extra`` is too long."""
    if sum(text_size(value) for value in values) * factor + extra > MAX_TEXT_CHARS:
        raise _refuse(what)


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_TEXT_CHARS:
        raise _refuse(what)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)")
_NUMBER = re.compile(r"\d+")


def _check_percent(fmt: Any, args: Any) -> None:
    """``fmt % args``: each conversion is at most its width (or precision) or all of ``args``."""
    if not isinstance(fmt, str | bytes):
        return
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    whole = text_size(args)
    total = len(text)
    for width, precision, _ in _PERCENT_SPEC.findall(text):
        if "*" in (width, precision):
            raise TemplateError("Template error: '*' widths are not allowed in formats")
        total += max(int(width or 0), int(precision or 0), whole)
        if total > MAX_TEXT_CHARS:
            raise _refuse("formatted string")


def _check_format(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``fmt.format(*args, **kwargs)``, counted like :func:`_check_percent`."""
    whole = text_size(args) + text_size(kwargs)
    total = 0
    for literal, field, spec, _ in string.Formatter().parse(fmt):
        total += len(literal)
        if field is None:
            continue
        spec = spec or ""
        if "{" in spec:
            raise TemplateError("Template error: nested format fields are not allowed")
        total += max([whole, *(int(number) for number in _NUMBER.findall(spec))])
        if total > MAX_TEXT_CHARS:
            raise _refuse("formatted string")


def _check_repeat(left: Any, right: Any) -> None:
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    sized = isinstance(sequence, str | bytes | list | tuple) and isinstance(times, int)
    if sized and len(sequence) * times > MAX_TEXT_CHARS:
        raise _refuse("sequence repetition")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    numbers = isinstance(left, int) and isinstance(right, int)
    if operator == "**":
        if numbers and right > 0 and max(left.bit_length(), 1) * right > MAX_INT_BITS:
            raise TemplateError("Template error: exponent too large")
    elif operator == "*":
        if numbers and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _refuse("number")
        _check_repeat(left, right)
    elif operator == "+":
        sized = isinstance(left, str | bytes | list | tuple) and isinstance(right, type(left))
        if sized and len(left) + len(right) > MAX_TEXT_CHARS:
            raise _refuse("concatenation")
    elif operator == "%":
        _check_percent(left, right)


def _replace_size(text: str | bytes, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    hits = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a string method call whose result would be too long; returns the arguments
    (``join``'s iterable made a list, so that checking it does not use it up)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes):
        return args
    name = getattr(method, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_width(args[0], f"{name}() width")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        if _replace_size(owner, args[0], args[1], count) > MAX_TEXT_CHARS:
            raise _refuse("replace() result")
    elif name == "join" and args:
        items = list(args[0])
        _check_text(*items, extra=len(owner) * len(items), what="join() result")
        return (items, *args[1:])
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        if isinstance(tabsize, int) and len(owner) + tabs * tabsize > MAX_TEXT_CHARS:
            raise _refuse("expandtabs() result")
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(owner) * longest > MAX_TEXT_CHARS:
            raise _refuse("translate() result")
    return args


class _Ticking:
    """A loop's iterable that checks the budget on every step (and keeps its length)."""

    def __init__(self, iterable: Any, tick: Callable[[], None]) -> None:
        self._iterable = iterable
        self._tick = tick

    def __len__(self) -> int:
        return len(self._iterable)

    def __iter__(self) -> Iterator[Any]:
        tick = self._tick
        for item in self._iterable:
            tick()
            yield item


class _Rewrite(NodeTransformer):
    """Loops iterate through the ticking filter; ``a ~ b`` goes through the checked concat."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, TICK_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(parts, CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, **_: Any) -> str:
    if isinstance(indent, int) and indent > MAX_JSON_INDENT:
        raise TemplateError(f"Template error: tojson indent over {MAX_JSON_INDENT}")
    _check_text(value, factor=1 + (indent or 0), what="tojson() result")
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > MAX_LIPSUM or max > MAX_LIPSUM or min > MAX_LIPSUM:
        raise TemplateError(f"Template error: lipsum is limited to {MAX_LIPSUM}")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _raise_exception(message: str) -> None:
    raise TemplateError(f"Template error: {message}")


def _strftime_now(fmt: str) -> str:
    if len(fmt) > 1000:
        raise _refuse("strftime format")
    return datetime.now().strftime(fmt)


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _check_indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text, width = args[0], _argument(args, kwargs, 1, "width")
    lines = text.count("\n") + 1 if isinstance(text, str) else text_size(text)
    growth = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
    _check_text(text, extra=lines * growth, what="indent() result")


def _check_wordwrap(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text, width = args[0], _argument(args, kwargs, 1, "width")
    wrap = _argument(args, kwargs, 3, "wrapstring") or "\n"
    if text_size(text) > MAX_WRAP_CHARS:
        raise _refuse("wordwrap() input")
    breaks = text_size(text) // max(width if isinstance(width, int) else 79, 1) + 1
    _check_text(text, extra=breaks * len(wrap), what="wordwrap() result")


def _check_replace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = args[0]
    old, new = _argument(args, kwargs, 1, "old"), _argument(args, kwargs, 2, "new")
    count = _argument(args, kwargs, 3, "count")
    if isinstance(text, str) and _replace_size(text, old, new, count) > MAX_TEXT_CHARS:
        raise _refuse("replace() result")


def _check_format_filter(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _check_percent(args[0], kwargs or args[1:])


def _check_count(index: int, name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        count = _argument(args, kwargs, index, name)
        if isinstance(count, int) and count > MAX_SEQUENCE_ITEMS:
            raise _refuse(f"{name}")

    return check


def _text_filter(factor: int) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        _check_text(*args, *kwargs.values(), factor=factor)

    return check


def _join_filter(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        items = list(value)
        _check_text(*items, extra=len(d) * len(items), what="join() result")
        return original(eval_ctx, items, d, attribute)

    return join


def _sum_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def checked_sum(environment: Any, iterable: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        items = list(iterable)
        start = _argument(args, kwargs, 1, "start")
        lengths = (len(i) for i in items if isinstance(i, str | list | tuple))
        if isinstance(start, str | list | tuple) and sum(lengths) > MAX_TEXT_CHARS:
            raise _refuse("sum() result")
        return original(environment, items, *args, **kwargs)

    return checked_sum


Check = Callable[[tuple[Any, ...], dict[str, Any]], None]
_FILTER_CHECKS: dict[str, Check] = {
    "center": lambda args, kwargs: _check_width(_argument(args, kwargs, 1, "width"), "center()"),
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "format": _check_format_filter,
    "batch": _check_count(1, "linecount"),
    "slice": _check_count(1, "slices"),
    "escape": _text_filter(6),
    "e": _text_filter(6),
    "forceescape": _text_filter(6),
    "urlencode": _text_filter(9),
    "urlize": _text_filter(4),
    **{
        name: _text_filter(1)
        for name in (
            "string", "pprint", "title", "capitalize", "upper", "lower", "trim", "striptags",
            "wordcount", "xmlattr", "truncate", "safe", "filesizeformat",
        )
    },
}  # fmt: skip


def _guard(original: Callable[..., Any], check: Check) -> Callable[..., Any]:
    """``original`` (a Jinja filter) after ``check`` on its own arguments, value first."""
    passes_context = getattr(original, "jinja_pass_arg", None) is not None

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(args[1:] if passes_context else args, kwargs)
        return original(*args, **kwargs)

    return guarded


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose renders are held to a :class:`RenderBudget` and size checks."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    _local = threading.local()

    def __init__(self) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[loopcontrols],
            autoescape=False,
            finalize=self._finalize,
        )
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        self.globals["range"] = self._range
        self.globals["lipsum"] = _lipsum
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _guard(self.filters[name], check)
        self.filters["join"] = _join_filter(self.filters["join"])
        self.filters["sum"] = _sum_filter(self.filters["sum"])
        self.filters["tojson"] = _tojson
        self.filters[TICK_FILTER] = self._ticking
        self.filters[CONCAT_FILTER] = self._concat_filter

    @property
    def budget(self) -> RenderBudget | None:
        return getattr(self._local, "budget", None)

    @budget.setter
    def budget(self, value: RenderBudget | None) -> None:
        self._local.budget = value

    def tick(self) -> None:
        budget = self.budget
        if budget is not None:
            budget.check()

    # ----- hooks of the sandbox and of the compiled template ----------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        template = super()._parse(source, name, filename)
        _Rewrite().visit(template)
        return template

    def concat(self, pieces: Iterable[str]) -> str:
        """Joins a block's output (``{% set %}`` blocks, macros, filter blocks): checked."""
        parts: list[str] = []
        size = 0
        for piece in pieces:
            size += len(piece)
            if size > MAX_TEXT_CHARS:
                raise _refuse("block output")
            parts.append(piece)
        return "".join(parts)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self.tick()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (_Ticking(args[0], self.tick), *args[1:])
        args = _check_method(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_map and args:
                _check_format(fmt, (), args[0] if isinstance(args[0], dict) else {})
            else:
                _check_format(fmt, args, kwargs)
            return wrapper(*args, **kwargs)

        return checked

    # ----- what the hooks use -------------------------------------------------------------

    def _finalize(self, value: Any) -> Any:
        if not isinstance(value, str):
            _check_text(value, what="output")
        return value

    def _ticking(self, value: Any) -> _Ticking:
        return _Ticking(value, self.tick)

    def _concat_filter(self, parts: list[Any]) -> str:
        _check_text(*parts, what="concatenation")
        return "".join(str(part) for part in parts)

    def _range(self, *args: int) -> range:
        values = range(*args)
        if len(values) > MAX_SEQUENCE_ITEMS:
            raise _refuse("range")
        return values
