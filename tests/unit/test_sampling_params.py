"""The shared sampler request model, its aliases and bounds, and override presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from backends.sampling import DEFAULT_DRY_SEQUENCE_BREAKERS, SamplingParams
from common.errors import BadRequestError, NotFoundError
from common.sampling import (
    PRESET_DIR,
    OverridePreset,
    SamplerRequest,
    kobold_sampler_order,
    list_presets,
    load_preset,
    resolve,
)
from tests.support.kobold import LITE_SAMPLER_ORDER, LITE_SAMPLERS

ALIASES = [
    ("max_completion_tokens", "max_tokens", 5),
    ("max_length", "max_tokens", 5),
    ("min_length", "min_tokens", 3),
    ("stop_sequence", "stop", ["###"]),
    ("custom_token_bans", "banned_tokens", [1, 2]),
    ("allowed_token_ids", "allowed_tokens", [4]),
    ("typical_p", "typical", 0.5),
    ("mirostat", "mirostat_mode", 2),
    ("rep_pen", "repetition_penalty", 1.1),
    ("repetition_range", "penalty_range", 64),
    ("repetition_penalty_range", "penalty_range", 64),
    ("rep_pen_range", "penalty_range", 64),
    ("rep_pen_slope", "repetition_penalty_slope", 0.7),
    ("dry_penalty_last_n", "dry_range", 100),
    ("sampler_seed", "seed", 42),
    ("dynatemp_low", "min_temp", 0.5),
    ("dynatemp_high", "max_temp", 1.5),
    ("dynatemp_exponent", "temp_exponent", 2.0),
    ("ignore_eos", "ban_eos_token", True),
    ("grammar", "grammar_string", 'root ::= "a"'),
    ("nsigma", "top_n_sigma", 1.5),
    ("guidance_scale", "cfg_scale", 1.5),
]


@pytest.mark.parametrize(("alias", "name", "value"), ALIASES)
def test_every_alias_maps_to_its_field(alias: str, name: str, value: object) -> None:
    request = SamplerRequest.model_validate({alias: value})
    assert getattr(request, name) == value
    assert getattr(resolve(request), name) == (tuple(value) if isinstance(value, list) else value)


def test_the_alias_table_covers_every_declared_alias() -> None:
    declared = {
        (alias, name)
        for name, info in SamplerRequest.model_fields.items()
        if info.validation_alias is not None
        for alias in info.validation_alias.choices  # type: ignore[union-attr]
        if alias != name
    }
    assert declared == {(alias, name) for alias, name, _ in ALIASES}


@pytest.mark.parametrize(
    ("sent", "named"),
    [
        ({"speculative_ngram": True}, ("speculative_ngram",)),
        ({"smoothing_curve": 2.0}, ("smoothing_curve",)),
        ({"adaptive_target": 0.4, "adaptive_decay": 0.9}, ("adaptive_target", "adaptive_decay")),
        # SillyTavern's defaults ask for none of them: nothing is named.
        (
            {
                "guidance_scale": 1,
                "negative_prompt": "",
                "speculative_ngram": False,
                "smoothing_curve": 1,
                "adaptive_target": -0.01,
                "adaptive_decay": 0.9,
            },
            (),
        ),
    ],
)
def test_settings_no_engine_applies_are_carried_to_be_named(
    sent: dict, named: tuple[str, ...]
) -> None:
    request = SamplerRequest.model_validate({"temperature": 0.5, **sent})
    assert request.not_applied == named
    assert resolve(request).not_applied == named


def test_cfg_is_resolved_like_every_sampler() -> None:
    """SillyTavern's guidance_scale is TabbyAPI's cfg_scale; a preset may force it and the
    negative prompt; 1 is off."""
    sent = SamplerRequest.model_validate({"guidance_scale": 1.5, "negative_prompt": "sad"})
    params = resolve(sent)
    assert (params.cfg_scale, params.negative_prompt, params.cfg) == (1.5, "sad", True)
    assert params.not_applied == ()
    assert not resolve(SamplerRequest.model_validate({"cfg_scale": 1})).cfg
    preset = OverridePreset.from_mapping(
        {"cfg_scale": {"override": 2.0, "force": True}, "negative_prompt": "dull"}
    )
    forced = resolve(sent, preset)
    assert (forced.cfg_scale, forced.negative_prompt) == (2.0, "sad")
    assert resolve(SamplerRequest(), preset).negative_prompt == "dull"


@pytest.mark.parametrize("scale", [0, -1, 101])
def test_a_cfg_scale_out_of_bounds_is_refused(scale: float) -> None:
    with pytest.raises(ValidationError):
        SamplerRequest.model_validate({"cfg_scale": scale})


def test_canonical_names_work_too() -> None:
    request = SamplerRequest.model_validate({"max_tokens": 7, "repetition_penalty": 1.2})
    assert (request.max_tokens, request.repetition_penalty) == (7, 1.2)


BAD_VALUES = [
    ("temperature", -0.1),
    ("temperature", 10.5),
    ("top_p", 1.5),
    ("top_k", -2),
    ("min_p", -0.01),
    ("typical", 0.0),
    ("tfs", 2.0),
    ("top_a", 1.1),
    ("xtc_probability", 1.5),
    ("mirostat_mode", 3),
    ("mirostat_tau", -1),
    ("repetition_penalty", 0.0),
    ("frequency_penalty", 2.5),
    ("presence_penalty", -3),
    ("penalty_range", -5),
    ("repetition_decay", -1),
    ("dry_multiplier", -1),
    ("dry_base", 0.5),
    ("dry_allowed_length", 0),
    ("dry_range", -2),
    ("min_tokens", -1),
    ("max_tokens", -1),
    ("skew", 11),
    ("min_temp", -1),
    ("seed", 2**64),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_out_of_bounds_values_are_rejected_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        SamplerRequest.model_validate({name: value})
    (error,) = caught.value.errors()
    assert error["loc"][0] == name
    assert error["msg"]  # e.g. "Input should be less than or equal to 10"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_rejected(value: float) -> None:
    with pytest.raises(ValidationError):
        SamplerRequest.model_validate({"temperature": value})


def test_minus_one_means_off_for_top_k_and_everything_for_dry_range() -> None:
    assert SamplerRequest(top_k=-1).top_k == 0
    assert SamplerRequest.model_validate({"dry_penalty_last_n": -1}).dry_range == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, 2, 3], [1, 2, 3]),
        ("1,2,3", [1, 2, 3]),
        ("[4, 5]", [4, 5]),
        (" 6 , 7 ", [6, 7]),
        ("", []),
    ],
)
def test_token_lists_accept_lists_csv_and_json(value: object, expected: list[int]) -> None:
    assert SamplerRequest.model_validate({"banned_tokens": value}).banned_tokens == expected
    assert SamplerRequest.model_validate({"allowed_tokens": value}).allowed_tokens == expected


def test_token_lists_reject_words() -> None:
    with pytest.raises(ValidationError, match="token ids"):
        SamplerRequest.model_validate({"banned_tokens": "a,b"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["\n", ":"], ["\n", ":"]),
        ('["\\n", ":", "*"]', ["\n", ":", "*"]),
        ('"\\n", ":"', ["\n", ":"]),
        ('"Alice"', ["Alice"]),
        ("", []),
    ],
)
def test_dry_sequence_breakers_accept_every_tabbyapi_form(value: object, expected: list) -> None:
    request = SamplerRequest.model_validate({"dry_sequence_breakers": value})
    assert request.dry_sequence_breakers == expected


@pytest.mark.parametrize("value", ["\\n, :", "[1, 2]", '["a"'])
def test_dry_sequence_breakers_reject_what_does_not_parse(value: str) -> None:
    with pytest.raises(ValidationError):
        SamplerRequest.model_validate({"dry_sequence_breakers": value})


def test_dry_sequence_breakers_default_to_sillytaverns() -> None:
    assert resolve(SamplerRequest()).dry_sequence_breakers == DEFAULT_DRY_SEQUENCE_BREAKERS
    assert resolve(SamplerRequest(dry_sequence_breakers=[])).dry_sequence_breakers == ()


def test_stop_and_banned_strings_accept_a_single_string() -> None:
    request = SamplerRequest.model_validate({"stop": "###", "banned_strings": "bad"})
    assert request.stop == ["###"] and request.banned_strings == ["bad"]


def test_logit_bias_keys_are_token_ids_and_values_bounded() -> None:
    params = resolve(SamplerRequest.model_validate({"logit_bias": {"12": 5, "3": -100}}))
    assert params.logit_bias == ((12, 5.0), (3, -100.0))
    with pytest.raises(ValidationError, match="token ids"):
        SamplerRequest.model_validate({"logit_bias": {"hello": 1}})
    with pytest.raises(ValidationError, match=r"-100\.\.100"):
        SamplerRequest.model_validate({"logit_bias": {"1": 101}})


def test_resolve_gives_neutral_settings_for_an_empty_request() -> None:
    params = resolve(SamplerRequest())
    assert params == SamplingParams()
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty) == (
        1.0,
        1.0,
        0,
        1.0,
    )


def test_max_tokens_zero_means_fill_the_context() -> None:
    assert resolve(SamplerRequest(max_tokens=0)).max_tokens is None


def test_kobold_sampler_order_maps_ids_and_refuses_unknown_ones() -> None:
    assert kobold_sampler_order(LITE_SAMPLER_ORDER) == LITE_SAMPLERS
    with pytest.raises(BadRequestError, match="Unknown sampler id 7"):
        kobold_sampler_order([0, 7])


# ----- presets ----------------------------------------------------------------------------------


def preset(data: dict) -> OverridePreset:
    return OverridePreset.from_mapping(data, name="test")


def test_an_override_fills_what_the_request_left_out() -> None:
    overrides = preset({"temperature": {"override": 0.5}, "top_k": 40})
    assert resolve(SamplerRequest(), overrides).temperature == 0.5
    assert resolve(SamplerRequest(), overrides).top_k == 40  # bare value: shorthand
    assert resolve(SamplerRequest(temperature=0.9), overrides).temperature == 0.9


def test_a_forced_override_replaces_what_the_request_sent() -> None:
    overrides = preset({"temperature": {"override": 0.5, "force": True}})
    assert resolve(SamplerRequest(temperature=0.9), overrides).temperature == 0.5


def test_an_additive_list_goes_before_the_requests() -> None:
    overrides = preset({"stop": {"override": ["###"], "additive": True}})
    assert resolve(SamplerRequest(stop=["\n"]), overrides).stop == ("###", "\n")
    assert resolve(SamplerRequest(), overrides).stop == ("###",)


def test_a_non_additive_list_is_only_a_default() -> None:
    overrides = preset({"stop": {"override": ["###"]}})
    assert resolve(SamplerRequest(stop=["\n"]), overrides).stop == ("\n",)


def test_force_wins_over_additive() -> None:
    overrides = preset({"banned_strings": {"override": ["x"], "force": True, "additive": True}})
    assert resolve(SamplerRequest(banned_strings=["y"]), overrides).banned_strings == ("x",)


def test_additive_logit_bias_merges_with_the_request_winning() -> None:
    overrides = preset({"logit_bias": {"override": {"1": 5, "2": 5}, "additive": True}})
    request = SamplerRequest.model_validate({"logit_bias": {"2": -3}})
    assert dict(resolve(request, overrides).logit_bias) == {1: 5.0, 2: -3.0}


def test_preset_values_go_through_the_same_validation() -> None:
    with pytest.raises(BadRequestError, match="temperature"):
        preset({"temperature": {"override": 50}})
    with pytest.raises(BadRequestError, match="Unknown sampler"):
        preset({"temprature": 0.5})
    with pytest.raises(BadRequestError, match="top_p"):
        preset({"top_p": {"override": 0.5, "forced": True}})
    assert resolve(SamplerRequest(), preset({"banned_tokens": "1,2"})).banned_tokens == (1, 2)


@pytest.mark.parametrize(
    "name", ["../config", "..", "a/b", "/etc/passwd", "..\\secrets", ".hidden", "", "x\x00y"]
)
def test_preset_names_cannot_leave_the_preset_folder(name: str, tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "config.yml").write_text("temperature: 0.1\n")
    with pytest.raises(BadRequestError, match="Invalid preset name"):
        load_preset(name, tmp_path / "inner")


def test_missing_and_broken_presets_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        load_preset("nothing", tmp_path)
    (tmp_path / "broken.yml").write_text("temperature: [\n")
    with pytest.raises(BadRequestError, match="not valid YAML"):
        load_preset("broken", tmp_path)
    (tmp_path / "listy.yml").write_text("- temperature\n")
    with pytest.raises(BadRequestError, match="mapping"):
        load_preset("listy", tmp_path)


def test_presets_are_listed_by_name(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("{}\n")
    (tmp_path / "a.yml").write_text("top_k: 3\n")
    (tmp_path / "notes.txt").write_text("not a preset\n")
    assert list_presets(tmp_path) == ["a", "b"]
    assert load_preset("a", tmp_path).entries["top_k"].override == 3


def test_shipped_presets_are_listed() -> None:
    assert {"safe_defaults", "sample_preset"} <= set(list_presets())


def test_safe_defaults_are_temperature_and_top_p_not_forced() -> None:
    safe = load_preset("safe_defaults")
    assert {k: (e.override, e.force) for k, e in safe.entries.items()} == {
        "temperature": (0.8, False),
        "top_p": (0.9, False),
    }
    assert (resolve(SamplerRequest(), safe).temperature, resolve(SamplerRequest(), safe).top_p) == (
        0.8,
        0.9,
    )
    assert resolve(SamplerRequest(temperature=0.2), safe).temperature == 0.2


def test_sample_preset_lists_every_sampler_at_its_neutral_value() -> None:
    raw = yaml.safe_load((PRESET_DIR / "sample_preset.yml").read_text(encoding="utf-8"))
    assert list(raw) and set(raw) == set(SamplerRequest.model_fields)
    sample = load_preset("sample_preset")
    assert all(not entry.force and not entry.additive for entry in sample.entries.values())
    assert resolve(SamplerRequest(), sample) == SamplingParams()


def test_every_sample_preset_key_has_a_comment() -> None:
    lines = (PRESET_DIR / "sample_preset.yml").read_text(encoding="utf-8").splitlines()
    key_lines = [i for i, line in enumerate(lines) if line and not line.startswith(("#", " "))]
    for index in key_lines:
        above = index - 1
        while above >= 0 and lines[above] and not lines[above].startswith("#"):
            above -= 1  # keys grouped under one comment
        assert above >= 0 and lines[above].startswith("#"), lines[index]


def test_preset_files_skip_samplers_serval_lacks(tmp_path: Path) -> None:
    (tmp_path / "from_tabby.yml").write_text(
        "temperature:\n  override: 0.7\nspeculative_ngram:\n  override: true\n"
    )
    loaded = load_preset("from_tabby", tmp_path)
    assert set(loaded.entries) == {"temperature"}


def test_a_negative_seed_means_a_random_one() -> None:
    # SillyTavern sends seed -1 for "random": it must not pin every regeneration.
    assert SamplerRequest.model_validate({"seed": -1}).seed is None
    assert SamplerRequest.model_validate({"seed": 5}).seed == 5
