"""Build `RouterSettings` from the TOML configuration file and the environment.

Unknown keys and wrongly typed values are rejected with the key's full dotted
name, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from router_service.errors import ConfigError
from router_service.settings import (
    CacheSettings,
    LimitSettings,
    ModelSettings,
    ResilienceSettings,
    RouterSettings,
    SecuritySettings,
)

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "default_config.toml"

_SERVER_KEYS = {
    "address": str,
    "max_query_chars": int,
    "max_tenant_chars": int,
    "max_output_tokens": int,
    "metrics_address": str,
    "metrics_max_tenants": int,
    "health_check_interval_s": float,
    "max_system_prompt_chars": int,
    "max_conversation_turns": int,
    "max_conversation_chars": int,
    "max_message_bytes": int,
    "max_metadata_bytes": int,
}
_SECURITY_KEYS = {
    "auth": str,
    "api_keys_file": str,
    "tls_cert_file": str,
    "tls_key_file": str,
    "tls_client_ca_file": str,
    "tls_client_allowed_names": list,
}
ENV_PREFIX = "QUERYGATE_ROUTER_"
# Every QUERYGATE_ROUTER_* variable that settings_from_document reads.
ENV_VARIABLES = (
    "QUERYGATE_ROUTER_ADDRESS",
    "QUERYGATE_ROUTER_CACHE_TARGET",
    "QUERYGATE_ROUTER_CLASSIFIER_DIR",
    "QUERYGATE_ROUTER_LEDGER_PATH",
    "QUERYGATE_ROUTER_API_KEYS_FILE",
)
_TOP_LEVEL_SECTIONS = (
    "server",
    "cache",
    "classifier",
    "resilience",
    "limits",
    "ledger",
    "security",
    "tiers",
    "models",
)


def load_settings(
    config_path: Path | None = None, environ: Mapping[str, str] | None = None
) -> RouterSettings:
    """Read the TOML file (the packaged default when None) and apply env overrides.

    Raises:
        ConfigError: the file is missing, not valid TOML, or a value is invalid.
    """
    path = config_path or DEFAULT_CONFIG_PATH
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found. Pass an existing file to --config."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return settings_from_document(document, environ or {})


def settings_from_document(
    document: Mapping[str, Any], environ: Mapping[str, str]
) -> RouterSettings:
    """Validate a parsed TOML document and build the settings from it."""
    _reject_unknown(document, _TOP_LEVEL_SECTIONS, "")
    server = _typed_table(document, "server", _SERVER_KEYS)
    classifier = _typed_table(
        document, "classifier", {"artifact_dir": str, "watch_interval_s": float}
    )
    ledger = _typed_table(document, "ledger", {"path": str, "backup_dir": str})
    cache = _dataclass_table(document, "cache", CacheSettings)
    if "QUERYGATE_ROUTER_CACHE_TARGET" in environ:
        cache["target"] = environ["QUERYGATE_ROUTER_CACHE_TARGET"]
    if "QUERYGATE_ROUTER_ADDRESS" in environ:
        server["address"] = environ["QUERYGATE_ROUTER_ADDRESS"]

    artifact_dir = environ.get(
        "QUERYGATE_ROUTER_CLASSIFIER_DIR", classifier.get("artifact_dir", "")
    )
    ledger_path = environ.get("QUERYGATE_ROUTER_LEDGER_PATH", ledger.get("path", ""))
    backup_dir = ledger.get("backup_dir", "var/backups/router")
    security = _typed_table(document, "security", _SECURITY_KEYS)
    if "QUERYGATE_ROUTER_API_KEYS_FILE" in environ:
        security["api_keys_file"] = environ["QUERYGATE_ROUTER_API_KEYS_FILE"]
    return RouterSettings(
        tiers=_parse_tiers(document.get("tiers", {})),
        models=_parse_models(document.get("models", {})),
        cache=CacheSettings(**cache),
        resilience=ResilienceSettings(
            **_dataclass_table(document, "resilience", ResilienceSettings)
        ),
        limits=LimitSettings(**_dataclass_table(document, "limits", LimitSettings)),
        classifier_artifact_dir=Path(artifact_dir) if artifact_dir else None,
        classifier_watch_interval_s=classifier.get("watch_interval_s", 5.0),
        ledger_path=Path(ledger_path) if ledger_path else None,
        ledger_backup_dir=Path(backup_dir) if backup_dir else None,
        log_format=environ.get("QUERYGATE_LOG_FORMAT", "text"),
        security=_security_settings(security),
        **server,
    )


def known_env_variables(settings: RouterSettings) -> set[str]:
    """Return the variables that configure the router, or hold a key it reads."""
    key_variables = {model.api_key_env for model in settings.models.values()}
    key_variables.add(settings.cache.api_key_env)
    return set(ENV_VARIABLES) | (key_variables - {""})


def _security_settings(values: Mapping[str, Any]) -> SecuritySettings:
    converted: dict[str, Any] = dict(values)
    for key, value in values.items():
        if key.endswith("_file"):
            # An empty file name means "not set", like the other path settings.
            converted[key] = Path(value) if value else None
    if "tls_client_allowed_names" in values:
        converted["tls_client_allowed_names"] = tuple(
            values["tls_client_allowed_names"]
        )
    return SecuritySettings(**converted)


def _reject_unknown(table: Mapping[str, Any], allowed: Any, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{prefix}{key} is not a known setting; allowed here: "
                f"{', '.join(sorted(allowed))}. Remove it or fix its spelling."
            )


def _check_type(name: str, value: Any, expected: type) -> Any:
    # TOML integers are acceptable where a float is expected; bool is not an int.
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and expected is not bool:
        valid = False
    else:
        valid = isinstance(value, expected)
    if not valid:
        raise ConfigError(
            f"{name} must be of type {expected.__name__}; got {value!r}. "
            "Fix the value in the config file."
        )
    return value


def _typed_table(
    document: Mapping[str, Any],
    section: str,
    keys: Mapping[str, type],
    prefix: str = "",
) -> dict[str, Any]:
    name = f"{prefix}{section}"
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name} must be a table; got {table!r}.")
    _reject_unknown(table, keys, f"{name}.")
    return {
        key: _check_type(f"{name}.{key}", value, keys[key])
        for key, value in table.items()
    }


def _field_types(cls: type) -> dict[str, type]:
    builtin = {"str": str, "int": int, "float": float, "bool": bool}
    return {f.name: builtin[str(f.type)] for f in fields(cls) if str(f.type) in builtin}


def _dataclass_table(
    document: Mapping[str, Any], section: str, cls: type
) -> dict[str, Any]:
    return _typed_table(document, section, _field_types(cls))


def _parse_tiers(tiers: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(tiers, dict):
        raise ConfigError(f"tiers must be a table; got {tiers!r}.")
    parsed: dict[str, tuple[str, ...]] = {}
    for tier, table in tiers.items():
        _reject_unknown(table, ("models",), f"tiers.{tier}.")
        models = table.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError(
                f"tiers.{tier}.models must be a list of model names; got {models!r}."
            )
        parsed[tier] = tuple(models)
    return parsed


def _parse_models(models: Any) -> dict[str, ModelSettings]:
    if not isinstance(models, dict) or not models:
        raise ConfigError(
            "models must contain at least one [models.NAME] table. "
            "See router_service/default_config.toml for an example."
        )
    types = _field_types(ModelSettings)
    del types["name"]
    required = (
        "backend",
        "model",
        "input_price_per_1k",
        "output_price_per_1k",
        "context_window",
        "timeout_s",
    )
    parsed = {}
    for name in models:
        values = _typed_table(models, name, types, prefix="models.")
        for key in required:
            if key not in values:
                raise ConfigError(
                    f"models.{name}.{key} is missing. Add it to [models.{name}]."
                )
        parsed[name] = ModelSettings(name=name, **values)
    return parsed
