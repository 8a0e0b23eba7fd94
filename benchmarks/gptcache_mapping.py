"""Map GPTCache's similarity to our cosine, and read and write its runner's files.

GPTCache 0.1.44 with its FAISS store and ``SearchDistanceEvaluation`` (the defaults
of ``init_similar_cache``) judges a candidate like this:

- ``SSDataManager`` scales every vector to unit length, and ``IndexFlatL2`` returns
  the squared L2 distance ``d``. For unit vectors ``d = 2 - 2 * cosine``.
- ``SearchDistanceEvaluation(max_distance=4.0)`` scores ``rank = 4 - d``, which is
  ``2 + 2 * cosine``, in the range [0, 4].
- The adapter serves the candidate when ``rank >= 4 * similarity_threshold``.

So a GPTCache ``similarity_threshold`` of ``t`` serves exactly the candidates with
``cosine >= 2 * t - 1``, and our cosine threshold ``c`` is GPTCache's ``(1 + c) / 2``.
At our default of 0.85 that is 0.925. GPTCache's own default of 0.8 is a cosine of
0.6. The adapter passes ``rank / 4`` to ``hit_callback``, which is ``(1 + cosine) / 2``.

This module imports only the standard library, because the runner imports it in
the separate benchmark environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.bench_cache_stats import PairOutcome
from benchmarks.bench_cache_timing import SpeedResult, speed_from_json

RUNNER_FORMAT = 1
# SearchDistanceEvaluation's default bound on the squared L2 distance.
MAX_DISTANCE = 4.0


def gptcache_threshold(cosine: float) -> float:
    """Return the GPTCache ``similarity_threshold`` that serves ``cosine`` and above."""
    if not -1.0 <= cosine <= 1.0:
        raise ValueError(f"cosine must be between -1 and 1; got {cosine}")
    return (1.0 + cosine) / 2.0


def cosine_from_threshold(similarity_threshold: float) -> float:
    """Return the lowest cosine that a GPTCache ``similarity_threshold`` serves."""
    if not 0.0 <= similarity_threshold <= 1.0:
        raise ValueError(
            f"similarity_threshold must be between 0 and 1; got {similarity_threshold}"
        )
    return 2.0 * similarity_threshold - 1.0


def cosine_from_distance(squared_l2: float) -> float:
    """Return the cosine of two unit vectors at squared L2 distance ``squared_l2``.

    The distance is clipped to [0, 4] first, as ``SearchDistanceEvaluation`` does.
    """
    clipped = min(max(squared_l2, 0.0), MAX_DISTANCE)
    return 1.0 - clipped / 2.0


def cosine_from_hit_score(score: float) -> float:
    """Return the cosine behind the score that GPTCache passes to ``hit_callback``."""
    return 2.0 * score - 1.0


@dataclass(frozen=True)
class RunnerResults:
    """Measurements of the GPTCache runner: pair outcomes by set, and speed runs."""

    gptcache_version: str
    embedding: str
    embedding_check_min_cosine: float
    lookup_threshold: float
    outcomes: dict[str, list[PairOutcome]]
    speed: dict[str, list[SpeedResult]]
    # Share of py-spy samples per innermost function, by embedding; empty
    # without --py-spy.
    profiles: dict[str, list[list[object]]]


def runner_input(
    pairs: list[dict[str, Any]],
    min_cosine: float,
    speed_entries: list[str],
    speed_queries: list[str],
    speed_clients: list[int],
    serving_cosine: float,
) -> dict[str, Any]:
    """Build the runner's input document.

    ``pairs`` contains objects with ``set``, ``first``, ``second`` and
    ``same_meaning``. The replay looks up at ``min_cosine``, and the speed runs at
    ``serving_cosine``, both given to GPTCache as its own threshold.
    """
    return {
        "format": RUNNER_FORMAT,
        "pairs": pairs,
        "replay_similarity_threshold": gptcache_threshold(min_cosine),
        "speed": {
            "entries": speed_entries,
            "queries": speed_queries,
            "clients": speed_clients,
            "similarity_threshold": gptcache_threshold(serving_cosine),
        },
    }


def parse_runner_output(document: dict[str, Any]) -> RunnerResults:
    """Check and read the runner's output document.

    Raises:
        ValueError: the format is unknown, or a field is missing or has the wrong type.
    """
    if document.get("format") != RUNNER_FORMAT:
        raise ValueError(
            f"GPTCache runner output has format {document.get('format')!r}, expected "
            f"{RUNNER_FORMAT}. Run the runner from the same checkout."
        )
    try:
        outcomes: dict[str, list[PairOutcome]] = {}
        for row in document["pairs"]:
            hit = bool(row["hit"])
            score = row["hit_score"]
            similarity = cosine_from_hit_score(float(score)) if hit else 0.0
            outcomes.setdefault(str(row["set"]), []).append(
                PairOutcome(bool(row["same_meaning"]), hit, similarity)
            )
        speed = {
            str(name): [speed_from_json(item) for item in runs]
            for name, runs in document["speed"].items()
        }
        check = float(document["embedding_check_min_cosine"])
        return RunnerResults(
            gptcache_version=str(document["gptcache_version"]),
            embedding=str(document["embedding"]),
            embedding_check_min_cosine=check,
            lookup_threshold=float(document["replay_similarity_threshold"]),
            outcomes=outcomes,
            speed=speed,
            profiles=dict(document.get("profiles", {})),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"GPTCache runner output is invalid: {type(error).__name__}: {error}"
        ) from None
