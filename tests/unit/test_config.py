"""Configuration: sources and their precedence, the generated sample, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.config import ConfigError, ServalConfig, build_config, export_sample, load_config
from main import build_parser, cli_values
from tests.support.server import run_main

ROOT = Path(__file__).resolve().parents[2]


def _cli(*argv: str) -> dict:
    return cli_values(build_parser().parse_args(list(argv)))


def test_defaults_follow_tabbyapi() -> None:
    config = ServalConfig()
    assert config.network.host == "127.0.0.1"
    assert config.network.port == 5000
    assert config.network.sse_ping_interval == 15
    assert config.model.model_dir == "models"
    assert config.model.cache_mode == "FP16"
    assert config.model.dummy_model_names == ["gpt-3.5-turbo"]
    assert config.lora.lora_dir == "loras"


def test_file_then_environment_then_cli(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yml"
    config_file.write_text(
        yaml.safe_dump(
            {"network": {"port": 6000, "host": "0.0.0.0"}, "model": {"max_seq_len": 1024}}
        )
    )
    environ = {"SERVAL_NETWORK_PORT": "7000", "SERVAL_MODEL_MAX_SEQ_LEN": "2048"}
    config, _ = load_config(config_file, _cli("--max-seq-len", "4096"), environ)
    assert config.network.host == "0.0.0.0"  # only in the file
    assert config.network.port == 7000  # environment beats the file
    assert config.model.max_seq_len == 4096  # CLI beats both


def test_cli_flags_cover_the_common_keys() -> None:
    values = _cli(
        "--host", "0.0.0.0", "--port", "5001", "--disable-auth", "--api-servers", "OAI",
        "--model-dir", "/m", "--model-name", "x", "--backend", "transformers",
        "--max-seq-len", "512", "--log-level", "debug",
    )  # fmt: skip
    config = build_config(cli_values=values)
    assert config.network.port == 5001
    assert config.network.disable_auth is True
    assert config.network.api_servers == ["OAI"]
    assert config.model.model_name == "x"
    assert config.model.backend == "transformers"
    assert config.logging.log_level == "debug"


def test_environment_lists_and_case_of_api_servers() -> None:
    config, _ = load_config(None, {}, {"SERVAL_NETWORK_API_SERVERS": "oai,kobold"})
    assert config.network.api_servers == ["OAI", "Kobold"]


def test_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"network\.port: .*integer.*'abc'"):
        build_config(cli_values={"network": {"port": "abc"}})


def test_unknown_keys_warn_but_load(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yml"
    config_file.write_text("memory:\n  sysmem_kv_cache: 0\nmodel:\n  vision_tower: true\n")
    _, warnings = load_config(config_file, {}, {})
    assert any("memory" in w for w in warnings)
    assert any("model.vision_tower" in w for w in warnings)


def test_sample_config_is_in_sync() -> None:
    sample = (ROOT / "config_sample.yml").read_text()
    assert sample == export_sample(), "config_sample.yml is stale: run python main.py export-config"
    assert ServalConfig.model_validate(yaml.safe_load(sample)) == ServalConfig()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("network:\n  port: [1, 2\n", "invalid YAML"),
        ("model:\n  max_seq_len: lots\n", "model.max_seq_len"),
        ("- just\n- a list\n", "expected sections"),
    ],
)
def test_bad_config_file_exits_with_one_clear_line(
    tmp_path: Path, content: str, expected: str
) -> None:
    (tmp_path / "config.yml").write_text(content)
    result = run_main([], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
