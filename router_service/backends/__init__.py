"""Model backends: an OpenAI-compatible HTTP client and a deterministic simulator."""

from __future__ import annotations

import os
from collections.abc import Mapping

from router_service.backends.base import (
    ChatMessage,
    Completion,
    CompletionChunk,
    CompletionRequest,
    ModelBackend,
)
from router_service.backends.openai_http import OpenAIChatBackend
from router_service.backends.simulator import SimulatedBackend
from router_service.errors import ConfigError
from router_service.settings import ModelSettings

__all__ = [
    "ChatMessage",
    "Completion",
    "CompletionChunk",
    "CompletionRequest",
    "ModelBackend",
    "OpenAIChatBackend",
    "SimulatedBackend",
    "build_backend",
]


def build_backend(
    settings: ModelSettings, environ: Mapping[str, str] | None = None
) -> ModelBackend:
    """Create the backend that `settings.backend` names.

    Raises:
        ConfigError: `api_key_env` names a variable that is not set.
    """
    if settings.backend == "simulator":
        return SimulatedBackend(settings)
    env = os.environ if environ is None else environ
    api_key = ""
    if settings.api_key_env:
        if settings.api_key_env not in env:
            raise ConfigError(
                f"models.{settings.name}.api_key_env names the environment variable "
                f"{settings.api_key_env}, which is not set. Export it or set "
                "api_key_env to an empty string for a server without keys."
            )
        api_key = env[settings.api_key_env]
    return OpenAIChatBackend(settings, api_key=api_key)
