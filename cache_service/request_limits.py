"""Rules for the query and scope fields of a request, shared by cache and router.

The router checks a request early and the cache checks it again, because the
cache must not trust its caller. Both call ``scope_violation`` with the same
limits, so a request that the router accepts is never rejected by the cache
when both run with the default limits. Nothing here imports grpc.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

CONVERSATION_ROLES = ("user", "assistant")
MAX_TEMPERATURE = 2.0
# Defaults of both services' settings. The largest request they allow, with every
# text at its limit, stays far below the default 4 MiB gRPC message limit.
DEFAULT_MAX_SYSTEM_PROMPT_CHARS = 32_000
DEFAULT_MAX_CONVERSATION_TURNS = 100
DEFAULT_MAX_CONVERSATION_CHARS = 100_000
DEFAULT_MAX_OUTPUT_TOKENS = 4096
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_METADATA_BYTES = 16 * 1024
# max_tokens is an int32 in both APIs, so a larger limit could never be reached.
MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class SettingBounds:
    """The accepted range of a limit setting, and advice shown when it is outside."""

    minimum: int
    maximum: int
    advice: str


# Bounds of the limit settings that both services share. Each value is checked
# once at startup, in the settings of each service.
LIMIT_SETTING_BOUNDS = {
    "max_output_tokens": SettingBounds(
        1,
        MAX_INT32,
        "The maximum is the largest value of the int32 max_tokens field. The "
        f"default is {DEFAULT_MAX_OUTPUT_TOKENS}.",
    ),
    "max_message_bytes": SettingBounds(
        64 * 1024,
        1024**3,
        "Below 64 KiB, ordinary requests with a long answer fail with "
        f"RESOURCE_EXHAUSTED. The default is {DEFAULT_MAX_MESSAGE_BYTES} (4 MiB).",
    ),
    "max_metadata_bytes": SettingBounds(
        4 * 1024,
        1024**2,
        "Below 4 KiB, gRPC's own headers and an API key may not fit. The default "
        f"is {DEFAULT_MAX_METADATA_BYTES} (16 KiB).",
    ),
}


# Control characters (Unicode category Cc, which is exactly U+0000-U+001F and
# U+007F-U+009F) other than tab, newline and carriage return. A query with one of
# them, such as NUL or ESC, is rejected.
_FORBIDDEN_QUERY_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Characters that show nothing on their own. They are control (Cc) and format (Cf,
# such as U+200B ZERO WIDTH SPACE and U+FEFF) characters, and combining marks
# without a base letter (Mn, Me, such as U+0301 and the variation selector
# U+FE0F). Unassigned (Cn) and private-use (Co) code points have no agreed glyph.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Mn", "Me", "Cn", "Co"})
# Letters and symbols that Unicode draws as blank: the Braille blank and the Hangul
# fillers.
_BLANK_FILLERS = frozenset("\u2800\u115f\u1160\u3164\uffa0")


class Turn(Protocol):
    """One earlier message of a conversation."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(frozen=True)
class ScopeLimits:
    """Upper bounds of the scope fields; each must be greater than 0."""

    max_system_prompt_chars: int = DEFAULT_MAX_SYSTEM_PROMPT_CHARS
    max_conversation_turns: int = DEFAULT_MAX_CONVERSATION_TURNS
    max_conversation_chars: int = DEFAULT_MAX_CONVERSATION_CHARS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS


@dataclass(frozen=True)
class Violation:
    """A broken rule: the field as the router's request names it, rule and fix."""

    field: str
    rule: str
    fix: str


def query_violation(
    text: str, max_chars: int, field: str = "query"
) -> Violation | None:
    """Return the first rule that a query text breaks, or None.

    A query needs at least one visible character: one that is not whitespace, a
    control (Cc), format (Cf), combining (Mn, Me), unassigned (Cn) or private-use
    (Co) character, or a blank filler such as U+2800. Format characters inside
    visible text are kept, because emoji sequences and right-to-left text need
    them. Control characters other than tab, newline and carriage return are
    rejected, not stripped, so the text that is cached is the text the caller sent.
    """
    if not any(_is_visible(character) for character in text):
        return Violation(
            field,
            "must contain a visible character, one that is not whitespace, a "
            "control, format, combining, unassigned or private-use character, or a "
            f"blank filler; got none (length {len(text)})",
            "Send the question to answer.",
        )
    if len(text) > max_chars:
        return Violation(
            field,
            f"must be at most {max_chars} characters; got {len(text)}",
            "Shorten the query or split it into several requests.",
        )
    return _control_violation(field, text)


def _control_violation(field: str, text: str) -> Violation | None:
    """Return the rule against control characters that ``text`` breaks, or None."""
    control = _FORBIDDEN_QUERY_CONTROLS.search(text)
    if control is None:
        return None
    code_point = ord(control.group())
    fix = "Remove the control characters from the text."
    if code_point >= 0x80:
        # Windows-1252 text decoded as Latin-1 turns curly quotes, dashes and the
        # ellipsis into U+0080-U+009F.
        fix += " U+0080-U+009F usually come from text decoded with the wrong encoding."
    return Violation(
        field,
        "must not contain control characters other than tab, newline and "
        f"carriage return; got U+{code_point:04X} at position {control.start()}",
        fix,
    )


def identifier_character_rule(value: str) -> str | None:
    """Return the rule that an id breaks, or None when it is printable with no spaces.

    Ids (tenants, users, model names, metadata keys) are written to the logs,
    where a newline or a control character could forge or hide a log line.
    """
    for position, character in enumerate(value):
        if character.isspace() or not character.isprintable():
            return (
                "must contain only printable characters and no whitespace; got "
                f"U+{ord(character):04X} at position {position}"
            )
    return None


def _is_visible(character: str) -> bool:
    return (
        not character.isspace()
        and character not in _BLANK_FILLERS
        and unicodedata.category(character) not in _INVISIBLE_CATEGORIES
    )


def limit_setting_violation(name: str, value: int) -> Violation | None:
    """Return the rule that a setting named in LIMIT_SETTING_BOUNDS breaks, or None."""
    bounds = LIMIT_SETTING_BOUNDS[name]
    if bounds.minimum <= value <= bounds.maximum:
        return None
    return Violation(
        name,
        f"must be between {bounds.minimum} and {bounds.maximum}; got {value}",
        bounds.advice,
    )


def scope_violation(
    system_prompt: str,
    conversation: Sequence[Turn],
    temperature: float | None,
    max_tokens: int | None,
    limits: ScopeLimits,
) -> Violation | None:
    """Return the first rule that the scope fields break, or None."""
    if temperature is not None and not (
        math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE
    ):
        return Violation(
            "temperature",
            f"must be between 0 and {MAX_TEMPERATURE:g}; got {temperature}",
            "Omit it to use the model's default.",
        )
    if max_tokens is not None and not 1 <= max_tokens <= limits.max_output_tokens:
        return Violation(
            "max_tokens",
            f"must be between 1 and {limits.max_output_tokens}; got {max_tokens}",
            "Omit it to use the model's default.",
        )
    if len(system_prompt) > limits.max_system_prompt_chars:
        return Violation(
            "system_prompt",
            f"must be at most {limits.max_system_prompt_chars} characters "
            f"(max_system_prompt_chars); got {len(system_prompt)}",
            "Shorten the instructions.",
        )
    control = _control_violation("system_prompt", system_prompt)
    if control is not None:
        return control
    return _conversation_violation(conversation, limits)


def _conversation_violation(
    conversation: Sequence[Turn], limits: ScopeLimits
) -> Violation | None:
    if len(conversation) > limits.max_conversation_turns:
        return Violation(
            "conversation",
            f"must have at most {limits.max_conversation_turns} turns "
            f"(max_conversation_turns); got {len(conversation)}",
            "Send only the most recent turns.",
        )
    total_chars = 0
    for index, turn in enumerate(conversation):
        if turn.role not in CONVERSATION_ROLES:
            return Violation(
                f"conversation[{index}].role",
                f"must be user or assistant; got {turn.role!r}",
                "Put instructions in system_prompt instead.",
            )
        control = _control_violation(f"conversation[{index}].content", turn.content)
        if control is not None:
            return control
        total_chars += len(turn.content)
    if total_chars > limits.max_conversation_chars:
        return Violation(
            "conversation",
            f"must total at most {limits.max_conversation_chars} characters of "
            f"content (max_conversation_chars); got {total_chars}",
            "Send only the most recent turns, or summarize earlier ones.",
        )
    return None


def grpc_limit_options(
    max_message_bytes: int, max_metadata_bytes: int
) -> list[tuple[str, int]]:
    """Return gRPC server options that enforce the message and metadata limits.

    gRPC rejects a larger request with RESOURCE_EXHAUSTED before any handler runs.
    The soft and the hard metadata limit are set equal, because between the two
    gRPC rejects a random share of requests.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_metadata_size", max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", max_metadata_bytes),
    ]
