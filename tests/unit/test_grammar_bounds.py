"""Grammar bounds: what reaches llguidance is bounded, and llguidance runs where it cannot
overflow the stack and take the process down (issue 15, finding 1).

Cases that could crash run in a subprocess, so a regression fails the test, not the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.grammar_threads import STACK_BYTES
from common.config import LimitsConfig
from common.errors import GrammarError
from common.grammar import GrammarBounds, build_grammar, from_grammar_text
from tests.support.server import ROOT

LARGEST = LimitsConfig.model_fields  # the largest values the settings accept


def _largest(key: str) -> int:
    return next(m.le for m in LARGEST[key].metadata if getattr(m, "le", None) is not None)


def chain(rules: int) -> str:
    """``start: r0``, ``r0: r1``, ... ``r<rules>: "a"``: the grammar of the crash."""
    lines = ["start: r0", *(f"r{i}: r{i + 1}" for i in range(rules)), f'r{rules}: "a"']
    return "\n".join(lines)


def ref_chain(defs: int) -> dict:
    definitions = {f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(defs)}
    definitions[f"a{defs}"] = {"type": "string"}
    return {"$ref": "#/$defs/a0", "$defs": definitions}


def _in_subprocess(body: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``body`` run by a fresh interpreter in a plain thread (8 MiB of stack, like the
    default thread pool that request work used to run on)."""
    script = "import threading, json\n" + textwrap.dedent(body)
    wrapped = f"{script}\nthread = threading.Thread(target=main)\nthread.start()\nthread.join()\n"
    return subprocess.run(
        [sys.executable, "-c", wrapped],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_chain_of_five_thousand_rules_is_refused_and_does_not_crash() -> None:
    result = _in_subprocess(
        f"""
        from common.errors import GrammarError
        from common.grammar import build_grammar
        def main():
            try:
                build_grammar(grammar_string={chain(5000)!r})
                print("accepted")
            except GrammarError as exc:
                print("refused:", exc.code, exc.message)
        """
    )
    assert result.returncode == 0, f"the process died ({result.returncode}): {result.stderr[-500:]}"
    assert "refused: grammar_too_large" in result.stdout
    assert "limits.grammar_max_rules" in result.stdout


def test_the_worst_grammars_the_largest_settings_allow_compile_on_the_grammar_threads(
    tiny_models: Path,
) -> None:
    """The proof that the rule limit stays below what the grammar threads' stack survives:
    chains of the most rules the settings accept (``le`` of grammar_max_rules), as Lark rules
    and as JSON schema ``$ref``s, compile cleanly, and so does an engine's matcher for them
    (an 8 MiB stack overflows at ~2,700)."""
    rules = _largest("grammar_max_rules") - 10
    bounds = GrammarBounds(
        max_chars=_largest("grammar_max_chars"),
        max_rules=_largest("grammar_max_rules"),
        max_depth=_largest("grammar_max_depth"),
        timeout=300,
    )
    result = _in_subprocess(
        f"""
        from common.grammar import GrammarBounds, from_grammar_text, from_json_schema
        from tests.unit.test_grammar_bounds import chain, ref_chain
        import llguidance.hf
        from transformers import AutoTokenizer
        from backends import grammar_threads
        def main():
            bounds = GrammarBounds(**{bounds.__dict__!r})
            lark = from_grammar_text(chain({rules}), bounds)
            print(lark.description)
            print(from_json_schema(ref_chain({rules}), bounds).description)
            hf = AutoTokenizer.from_pretrained({str(tiny_models / "tiny-a")!r})
            tokenizer = llguidance.hf.from_tokenizer(hf)
            work = grammar_threads.pool().submit(
                grammar_threads.build_matcher, tokenizer, lark.grammar
            )
            print("matcher", work.result().is_error())
        """,
        timeout=280,
    )
    assert result.returncode == 0, f"the process died ({result.returncode}): {result.stderr[-500:]}"
    lines = result.stdout.split("\n")[:3]
    assert lines == ["Lark grammar", "JSON schema", "matcher False"], result.stderr[-500:]
    assert STACK_BYTES >= 256 << 20


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"grammar_string": chain(2500)}, "grammar_max_rules"),
        ({"grammar_string": 'start: "' + "a" * 300_000 + '"'}, "grammar_max_chars"),
        (
            {
                "grammar_string": "root ::= r0\n"
                + "".join(f"r{i} ::= r{i + 1}\n" for i in range(3000))
            },
            "grammar_max_rules",
        ),
        ({"json_schema": ref_chain(3000)}, "grammar_max_rules"),
        ({"regex_pattern": "(" * 100 + "a" + ")" * 100}, "grammar_max_depth"),
        ({"regex_pattern": "a" * 300_000}, "grammar_max_chars"),
    ],
    ids=["lark-rules", "lark-size", "gbnf-rules", "schema-refs", "regex-depth", "regex-size"],
)
def test_grammars_over_a_bound_are_refused_naming_the_setting(kwargs: dict, setting: str) -> None:
    with pytest.raises(GrammarError) as refused:
        build_grammar(**kwargs)
    assert refused.value.status_code == 400
    assert setting in refused.value.message


def test_a_schema_nested_deeper_than_the_bound_is_refused_without_recursion() -> None:
    schema: dict = {"type": "string"}
    for _ in range(5000):  # deeper than Python's own recursion limit
        schema = {"type": "array", "items": schema}
    with pytest.raises(GrammarError, match="grammar_max_depth"):
        build_grammar(json_schema=schema)


def test_ordinary_grammars_still_compile() -> None:
    assert build_grammar(json_schema={"type": "object", "properties": {"a": {"type": "integer"}}})
    assert build_grammar(regex_pattern=r"(yes|no)\.")
    assert build_grammar(grammar_string='start: "a" | "b"')
    assert build_grammar(grammar_string='root ::= "a" | "b"')


def test_a_grammar_that_compiles_past_the_timeout_is_a_400() -> None:
    bounds = GrammarBounds(max_chars=200_000, max_rules=2000, max_depth=64, timeout=0.001)
    slow = "root ::= r0\n" + "".join(f'r{i} ::= r{i + 1} | "a"\n' for i in range(1900))
    with pytest.raises(GrammarError) as refused:
        from_grammar_text(slow, bounds)
    assert refused.value.code == "grammar_timeout"


# ----- generated grammars within the bounds: a clean answer, never a crash ------------------

_names = st.integers(min_value=0, max_value=30).map(lambda i: f"r{i}")
_atoms = st.one_of(
    _names,
    st.text(alphabet="abc{}[]", min_size=1, max_size=4).map(json.dumps),
    st.sampled_from(["/[a-z]+/", "/\\d{1,3}/", '"x"*', '("y" | "z")?']),
)
_bodies = st.lists(st.lists(_atoms, min_size=1, max_size=4), min_size=1, max_size=4).map(
    lambda alternatives: " | ".join(" ".join(seq) for seq in alternatives)
)


@st.composite
def lark_grammars(draw: st.DrawFn) -> str:
    rules = draw(st.lists(_bodies, min_size=1, max_size=31))
    lines = ["start: r0", *(f"r{i}: {body}" for i, body in enumerate(rules))]
    lines += [f'r{i}: "q"' for i in range(len(rules), 31)]
    return "\n".join(lines)


_leaf_schemas = st.sampled_from(
    [{"type": "string"}, {"type": "integer", "minimum": 0}, {"enum": ["a", "b"]}, {"$ref": "#"}]
)
_schemas = st.recursive(
    _leaf_schemas,
    lambda inner: st.one_of(
        st.builds(lambda items: {"type": "array", "items": items}, inner),
        st.dictionaries(st.sampled_from("abcd"), inner, max_size=3).map(
            lambda props: {"type": "object", "properties": props}
        ),
        st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options}),
    ),
    max_leaves=20,
)


def _compiles_or_is_refused_cleanly(**source: Any) -> None:
    """``build_grammar(**source)`` gives a grammar or a 400, nothing else."""
    try:
        spec = build_grammar(**source)
    except GrammarError as exc:
        assert exc.status_code == 400
    else:
        assert spec is not None and spec.grammar


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lark_grammars())
def test_generated_lark_grammars_compile_or_are_refused_cleanly(grammar: str) -> None:
    _compiles_or_is_refused_cleanly(grammar_string=grammar)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schemas)
def test_generated_json_schemas_compile_or_are_refused_cleanly(schema: dict) -> None:
    _compiles_or_is_refused_cleanly(json_schema=schema)
