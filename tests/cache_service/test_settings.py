"""Tests of CacheSettings: defaults, TOML and environment sources, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_service.errors import SettingsError
from cache_service.settings import CacheSettings, env_name


def test_defaults_match_documented_values() -> None:
    settings = CacheSettings()
    assert settings.address == "127.0.0.1:50052"
    assert settings.min_cosine_similarity == 0.85
    assert settings.exact_ttl_s == 3600
    assert settings.semantic_ttl_s == 1800


def test_environment_overrides_toml(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text("min_cosine_similarity = 0.9\nmax_entries = 10\n")
    env = {"QUERYGATE_CACHE_MAX_ENTRIES": "20", "QUERYGATE_LOG_FORMAT": "json"}

    settings = CacheSettings.load(env, config)

    assert settings.min_cosine_similarity == 0.9
    assert settings.max_entries == 20
    assert settings.log_format == "json"


def test_env_names_use_service_prefix_except_logging() -> None:
    assert env_name("exact_ttl_s") == "QUERYGATE_CACHE_EXACT_TTL_S"
    assert env_name("log_level") == "QUERYGATE_LOG_LEVEL"


def test_blank_environment_value_keeps_default() -> None:
    settings = CacheSettings.load({"QUERYGATE_CACHE_MAX_ENTRIES": "  "})
    assert settings.max_entries == CacheSettings().max_entries


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"min_cosine_similarity": 1.5},
            r"min_cosine_similarity must be in \(0, 1\]; got 1.5",
            id="similarity-above-one",
        ),
        pytest.param(
            {"min_cosine_similarity": 0.0},
            r"min_cosine_similarity must be in \(0, 1\]; got 0.0",
            id="similarity-zero",
        ),
        pytest.param(
            {"exact_ttl_s": -1.0},
            r"exact_ttl_s must be greater than 0; got -1.0. "
            r"Set QUERYGATE_CACHE_EXACT_TTL_S",
            id="negative-ttl",
        ),
        pytest.param(
            {"max_entries": 0}, "max_entries must be greater than 0", id="no-entries"
        ),
        pytest.param(
            {"exact_ttl_s": float("inf")},
            r"exact_ttl_s must be a finite number; got inf",
            id="endless-ttl",
        ),
        pytest.param(
            {"sweep_interval_s": 1e-9},
            r"sweep_interval_s must be at least 0.01 s; got 1e-09",
            id="busy-sweeper",
        ),
        pytest.param(
            {"health_check_interval_s": 0.001},
            r"health_check_interval_s must be at least 0.01 s",
            id="busy-health-checks",
        ),
        pytest.param(
            {"max_workers": 100_000},
            r"max_workers must be at most 1024; got 100000",
            id="too-many-workers",
        ),
        pytest.param(
            {"search_candidates": 10**8},
            r"search_candidates must be at most 1024",
            id="too-many-candidates",
        ),
        pytest.param(
            {"address": "localhost"}, "address must be HOST:PORT", id="no-port"
        ),
        pytest.param(
            {"log_format": "xml"},
            r"log_format must be one of \['text', 'json'\]",
            id="log-format",
        ),
        pytest.param(
            {"embedding_model_dir": Path("/nonexistent/model")},
            "embedding_model_dir must be an existing folder",
            id="model-dir",
        ),
    ],
)
def test_invalid_value_is_rejected_with_rule(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        CacheSettings(**overrides)  # type: ignore[arg-type]


def test_non_numeric_environment_value_names_variable() -> None:
    with pytest.raises(
        SettingsError,
        match=r"max_entries must be an integer; got 'many'\. "
        r"Set QUERYGATE_CACHE_MAX_ENTRIES",
    ):
        CacheSettings.load({"QUERYGATE_CACHE_MAX_ENTRIES": "many"})


def test_fractional_integer_setting_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text("max_entries = 2.5\n")
    with pytest.raises(
        SettingsError, match=r"max_entries must be an integer; got 2\.5"
    ):
        CacheSettings.load({}, config)


def test_tiny_message_limit_from_environment_is_rejected() -> None:
    with pytest.raises(
        SettingsError,
        match=r"max_message_bytes must be between 65536 and 1073741824; got 10\. "
        r"Below 64 KiB, ordinary requests .* Set QUERYGATE_CACHE_MAX_MESSAGE_BYTES",
    ):
        CacheSettings.load({"QUERYGATE_CACHE_MAX_MESSAGE_BYTES": "10"})


def test_output_tokens_above_int32_in_toml_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text("max_output_tokens = 100000000000\n")
    with pytest.raises(
        SettingsError,
        match=r"max_output_tokens must be between 1 and 2147483647; got "
        r"100000000000\. The maximum is the largest value of the int32",
    ):
        CacheSettings.load({}, config)


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        pytest.param(
            "max_metadata_bytes", 4095, "4096 and 1048576; got 4095", id="meta-low"
        ),
        pytest.param("max_metadata_bytes", 2**20 + 1, "got 1048577", id="meta-high"),
        pytest.param("max_message_bytes", 2**30 + 1, "got 1073741825", id="msg-high"),
    ],
)
def test_limit_outside_bounds_is_rejected(name: str, value: int, rule: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be between .*{rule}"):
        CacheSettings(**{name: value})  # type: ignore[arg-type]


def test_limits_at_their_bounds_are_accepted() -> None:
    lowest = CacheSettings(
        max_message_bytes=65536, max_metadata_bytes=4096, max_output_tokens=1
    )
    highest = CacheSettings(
        max_message_bytes=2**30, max_metadata_bytes=2**20, max_output_tokens=2**31 - 1
    )

    assert lowest.max_message_bytes == 65536
    assert highest.max_output_tokens == 2**31 - 1


def test_unknown_toml_key_lists_valid_keys(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text("min_cosine = 0.9\n")
    with pytest.raises(SettingsError, match=r"unknown keys \['min_cosine'\]"):
        CacheSettings.load({}, config)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        CacheSettings.load({}, tmp_path / "absent.toml")


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "cache.toml"
    config.write_text("max_entries = = 3\n")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        CacheSettings.load({}, config)
