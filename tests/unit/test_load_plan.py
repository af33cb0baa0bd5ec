"""A load's settings: config < request < the folder's tabby_config.yml, validated once, with
the config models' defaults for every key no source sets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.config import ServalConfig
from common.errors import BadRequestError
from common.model import ModelContainer


def _container(models: Path, **model: object) -> ModelContainer:
    return ModelContainer(
        ServalConfig.model_validate({"model": {"model_dir": str(models), **model}})
    )


def test_unset_keys_take_the_config_defaults_and_the_folder_wins(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tabby_config.yml").write_text(
        yaml.safe_dump({"model": {"max_seq_len": 300, "cache_mode": None}})
    )
    container = _container(tmp_path, cache_mode="Q8", chunk_size=512)
    plan = container.plan_load("m", request={"chunk_size": 1024}, draft={"draft_num_tokens": 3})
    # An API load takes only use_as_default from the config (none here): the request, the
    # folder, then the defaults of ModelConfig; a folder's empty value leaves the key alone.
    assert (plan.settings.max_seq_len, plan.settings.chunk_size) == (300, 1024)
    assert plan.settings.cache_mode == "FP16"
    assert (plan.draft.draft_num_tokens, plan.draft.draft_mode) == (3, "model")
    startup = container.plan_load("m")
    assert (startup.settings.cache_mode, startup.settings.chunk_size) == ("Q8", 512)


def test_a_bad_folder_setting_is_refused_when_planned(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tabby_config.yml").write_text(yaml.safe_dump({"model": {"chunk_size": "big"}}))
    with pytest.raises(BadRequestError, match="chunk_size"):
        _container(tmp_path).plan_load("m")
