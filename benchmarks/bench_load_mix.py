"""The query mix of the load benchmark: exact repeats, paraphrases and new queries.

Queries come from Quora question pairs. A new query is a question not sent before.
When it belongs to a duplicate pair, its partner becomes a paraphrase that a later
draw can send. An exact repeat resends a question already sent, verbatim.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from benchmarks.replay_plan import QuestionPair, load_pairs

KINDS = ("exact", "paraphrase", "new")


@dataclass(frozen=True)
class MixShares:
    """The share of each kind of query, each between 0 and 1, summing to 1."""

    exact: float = 0.3
    paraphrase: float = 0.2
    new: float = 0.5

    def __post_init__(self) -> None:
        for kind in KINDS:
            share = getattr(self, kind)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"the {kind} share must be in [0, 1]; got {share}")
        total = self.exact + self.paraphrase + self.new
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"the shares must sum to 1; got {total:g} "
                f"(exact={self.exact}, paraphrase={self.paraphrase}, new={self.new})"
            )

    @classmethod
    def parse(cls, text: str) -> MixShares:
        """Parse "exact=0.3,paraphrase=0.2,new=0.5"; a kind left out gets 0.

        Raises:
            ValueError: a part is not KIND=SHARE, the kind is unknown, or the
                shares are out of range or do not sum to 1.
        """
        shares = dict.fromkeys(KINDS, 0.0)
        for part in text.split(","):
            kind, separator, value = part.partition("=")
            kind = kind.strip()
            if not separator or kind not in KINDS:
                raise ValueError(
                    f"expected KIND=SHARE with KIND one of {', '.join(KINDS)}; "
                    f"got {part!r}"
                )
            try:
                shares[kind] = float(value)
            except ValueError:
                raise ValueError(
                    f"the {kind} share must be a number; got {value!r}"
                ) from None
        return cls(**shares)

    def describe(self) -> str:
        """Return the shares as "exact=0.3,paraphrase=0.2,new=0.5"."""
        return ",".join(f"{kind}={getattr(self, kind):g}" for kind in KINDS)


@dataclass(frozen=True)
class MixedQuery:
    """One query to send: its text, the kind that was drawn and the kind it became.

    ``kind`` differs from ``drawn`` when the drawn kind had no candidate yet, for
    example a paraphrase before any duplicate pair was sent. The draw then falls
    back to a new query, or to an exact repeat once new questions run out.
    """

    text: str
    drawn: str
    kind: str


class QueryMix:
    """Draws queries in the configured shares. Not thread-safe: use one event loop.

    Raises ``PoolExhaustedError`` from ``draw`` when no question is left to send
    as a new query and nothing has been sent yet for a repeat.
    """

    def __init__(
        self, pairs: list[QuestionPair], shares: MixShares, rng: random.Random
    ) -> None:
        self._shares = shares
        self._rng = rng
        # New questions, consumed from the end. Each carries its duplicate partner.
        self._fresh: list[tuple[str, str | None]] = []
        for pair in pairs:
            partner = pair.question2 if pair.is_duplicate else None
            self._fresh.append((pair.question1, partner))
            if not pair.is_duplicate:
                self._fresh.append((pair.question2, None))
        rng.shuffle(self._fresh)
        self._sent: list[str] = []
        self._paraphrases: list[str] = []

    @property
    def fresh_left(self) -> int:
        """Questions not yet sent that can still serve as new queries."""
        return len(self._fresh)

    def draw(self) -> MixedQuery:
        """Draw one query and record it as sent.

        Raises:
            PoolExhaustedError: no new question is left and none was sent.
        """
        weights = [getattr(self._shares, kind) for kind in KINDS]
        drawn = self._rng.choices(KINDS, weights)[0]
        if drawn == "paraphrase" and self._paraphrases:
            index = self._rng.randrange(len(self._paraphrases))
            text = self._paraphrases.pop(index)
            return self._sent_as(MixedQuery(text, drawn, "paraphrase"))
        if drawn == "exact" and self._sent:
            return MixedQuery(self._rng.choice(self._sent), drawn, "exact")
        if self._fresh:
            return self._sent_as(MixedQuery(self._next_fresh(), drawn, "new"))
        if self._sent:
            return MixedQuery(self._rng.choice(self._sent), drawn, "exact")
        raise PoolExhaustedError("the question pool is empty: raise --pairs")

    def new_query(self) -> str:
        """Return a question never sent before and record it as sent.

        Raises:
            PoolExhaustedError: every question has been sent.
        """
        if not self._fresh:
            raise PoolExhaustedError(
                "every question of the pool has been sent: raise --pairs"
            )
        text = self._next_fresh()
        self._sent.append(text)
        return text

    def take_paraphrase(self) -> str | None:
        """Return an unsent paraphrase of a sent question, or None when none is left."""
        if not self._paraphrases:
            return None
        text = self._paraphrases.pop()
        self._sent.append(text)
        return text

    def sent_question(self) -> str | None:
        """Return a random question already sent, or None when none was."""
        return self._rng.choice(self._sent) if self._sent else None

    def _next_fresh(self) -> str:
        text, partner = self._fresh.pop()
        if partner is not None:
            self._paraphrases.append(partner)
        return text

    def _sent_as(self, query: MixedQuery) -> MixedQuery:
        self._sent.append(query.text)
        return query


class PoolExhaustedError(RuntimeError):
    """The mix has no question left to send."""


def load_mix(data_dir: Path, pair_count: int, shares: MixShares, seed: int) -> QueryMix:
    """Load ``pair_count`` random Quora pairs from ``data_dir`` into a mix.

    Raises:
        FileNotFoundError: quora_qqp/qqp_pairs.csv is missing.
        ValueError: the file lacks a column or has fewer usable pairs.
    """
    rng = random.Random(seed)
    return QueryMix(load_pairs(data_dir, pair_count, rng), shares, rng)
