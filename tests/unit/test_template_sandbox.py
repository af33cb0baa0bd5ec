"""The chat template sandbox (issue 15, finding 2): loops tick the budget, nothing builds a
huge string before a size check, and generated templates render or fail with a 400."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.chat.templates import ChatTemplate
from common.errors import TemplateError

MESSAGES = {"messages": [{"role": "user", "content": " hi "}]}
ATTACKS = {
    "loops-without-calls": '{% set s = "a" * 3000 %}{% for a in s %}{% for b in s %}'
    "{% for c in s %}{% endfor %}{% endfor %}{% endfor %}",
    "lipsum": "{{ lipsum(20000) }}",
    "wordwrap": '{{ ("word " * 800000) | wordwrap(3) }}',
    "percent": "{{ (messages[0].content ~ '%0200000000d') % 1 }}",
    "percent-star": "{{ '%*d' % (200000000, 1) }}",
    "center": "{{ messages[0].content | center(200000000) }}",
    "str-center": "{{ messages[0].content.center(200000000) }}",
    "format": "{{ '{0:>200000000}'.format(1) }}",
    "tojson-indent": "{{ messages | tojson(indent=200000000) }}",
    "plus-doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "tilde-doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "list-of-references": "{% set s = 'a' * 3000000 %}{{ [s] * 1000 }}",
    "join-of-references": "{% set s = 'a' * 3000000 %}{{ ([s] * 1000) | join }}",
    "self-nested-list": "{% set ns = namespace(x=['a']) %}{% for i in range(60) %}"
    "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
    "block-capture": "{% set s = 'a' * 3000000 %}{% set x %}{% for i in range(100) %}{{ s }}"
    "{% endfor %}{% endset %}{{ x | length }}",
    "macro-output": "{% set s = 'a' * 3000000 %}{% macro m() %}{% for i in range(100) %}"
    "{{ s }}{% endfor %}{% endmacro %}{{ m() | length }}",
    "replace": "{% set s = 'a' * 100000 %}{{ s.replace('a', s) | length }}",
    "indent": "{% set s = '\\n' * 100000 %}{{ s | indent(100000, blank=true) | length }}",
    "big-integer": "{% set ns = namespace(x=3) %}{% for i in range(100) %}"
    "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ 1 }}",
    "recursive-macro": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
}


@pytest.mark.parametrize("source", ATTACKS.values(), ids=ATTACKS.keys())
def test_attacks_are_template_errors_within_the_budget(source: str) -> None:
    template = ChatTemplate.from_string(source)
    started = time.monotonic()
    with pytest.raises(TemplateError) as refused:
        template.render(MESSAGES, timeout=1.0)
    assert refused.value.status_code == 400
    assert time.monotonic() - started < 5.0  # 1 s of budget, and the checks stop most at once


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}"
        "{{ loop.index }}/{{ loop.length }}{% endfor %}{{ messages | tojson }}"
        "{{ '%s-%05d' % ('x', 3) }}{{ '{}:{:>4}'.format('a', 1) }}{{ 'ab' | center(6) }}"
        "{{ [1, 2] | join(',') }}{{ 'a' ~ 1 }}{% set x %}[{{ 2 + 3 }}]{% endset %}{{ x }}"
    )
    text = ChatTemplate.from_string(source).render(MESSAGES)
    assert text == ('<|user|>hi1/1[{"role": "user", "content": " hi "}]x-00003a:   1  ab  1,2a1[5]')


def test_a_recursive_loop_ticks_on_every_level() -> None:
    source = (
        "{% for item in tree recursive %}{{ item.name }}"
        "{% if item.children %}({{ loop(item.children) }}){% endif %}{% endfor %}"
    )
    tree = [{"name": "a", "children": [{"name": "b", "children": []}]}]
    assert ChatTemplate.from_string(source).render({"tree": tree}) == "a(b)"


_parts = st.sampled_from(
    [
        "{{ 'ab' * 3 }}",
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        "{{ messages | tojson }}",
        "{{ ('x' ~ 'y') | upper }}",
        "{{ '%05d' % 7 }}",
        "{{ '{:>6}'.format('z') }}",
        "{% for i in range(3) %}{{ loop.index }}{% endfor %}",
        "{{ 'a b c' | wordwrap(2) }}",
        "{{ messages[0].content | center(9) }}",
        "{{ lipsum(1, false, 5, 6) | length > 0 }}",
        "{{ messages[0].content * 100000 }}",
        "{{ messages[0].content | indent(1000) }}",
        "{% set ns = namespace(s='a') %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        "{% for a in range(100000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
    ]
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_parts, min_size=1, max_size=4))
def test_generated_templates_render_or_fail_within_the_budget(parts: list[str]) -> None:
    template = ChatTemplate.from_string("".join(parts))
    started = time.monotonic()
    try:
        text = template.render(MESSAGES, timeout=0.5)
    except TemplateError as exc:
        assert exc.status_code == 400
    else:
        assert len(text) <= 4_000_000
    assert time.monotonic() - started < 5.0
