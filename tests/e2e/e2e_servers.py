"""Helpers of the end-to-end tests that start the real router."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from router_service.server import RunningServer, create_server
from router_service.settings import CacheSettings, ModelSettings, RouterSettings
from router_service.testing import settings_for_tests

# Generous, because the first embedding is slow on a busy CPU.
CACHE_TIMEOUT_S = 10.0
TIERS = ("simple", "medium", "complex")


def router_settings(
    cache_target: str, models: Mapping[str, ModelSettings] | None = None
) -> RouterSettings:
    """Return test router settings that dial `cache_target`."""
    tiers = None
    if models is not None:
        tiers = {tier: (name,) for tier, name in zip(TIERS, models, strict=True)}
    base = settings_for_tests(models=models, tiers=tiers)
    return replace(
        base, cache=CacheSettings(target=cache_target, timeout_s=CACHE_TIMEOUT_S)
    )


async def start_router(settings: RouterSettings, classifier: object) -> RunningServer:
    """Start a real router on port 0 with `classifier` and real gRPC backends."""
    running = await create_server(settings, classifier=classifier)  # type: ignore[arg-type]
    await running.wait_until_serving(timeout_s=30)
    return running
