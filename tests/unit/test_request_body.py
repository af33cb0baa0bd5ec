"""The JSON shape check that runs on every body before a route validates it."""

from __future__ import annotations

import json

import pytest

from common.config import LimitsConfig
from common.errors import BadRequestError
from endpoints.request_body import BodyLimits, check_json_shape

LIMITS = BodyLimits.of(
    10 * 1024 * 1024,
    30.0,
    LimitsConfig(max_json_depth=8, max_json_values=2000, max_json_objects=100),
)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


def test_a_body_within_the_limits_passes() -> None:
    check_json_shape(json.dumps({"messages": [{"role": "user"}] * 99}).encode(), LIMITS)
    check_json_shape(json.dumps(_nested(8)).encode(), LIMITS)
    check_json_shape(json.dumps({"prompt": list(range(1990))}).encode(), LIMITS)


@pytest.mark.parametrize(
    ("body", "setting"),
    [
        (_nested(9), "max_json_depth"),
        ({"prompt": list(range(2000))}, "max_json_values"),
        ({"messages": [{"role": "user"}] * 100}, "max_json_objects"),
    ],
    ids=["depth", "values", "objects"],
)
def test_a_body_past_a_limit_is_a_400(body: object, setting: str) -> None:
    with pytest.raises(BadRequestError, match=f"limits.{setting}"):
        check_json_shape(json.dumps(body).encode(), LIMITS)


def test_nesting_too_deep_for_the_parser_is_a_400() -> None:
    with pytest.raises(BadRequestError, match="max_json_depth"):
        check_json_shape(b"[" * 100_000 + b"]" * 100_000, LIMITS)


@pytest.mark.parametrize("body", [b"{not json", b'{"a": "\xff"}', b""])
def test_a_body_that_is_not_json_is_left_to_the_route(body: bytes) -> None:
    check_json_shape(body, LIMITS)  # the route's own parser reports it in its words
