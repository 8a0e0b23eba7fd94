"""The false-hit guard: rejects a semantic hit whose meaning differs from the query.

The embedding barely moves when a number, a "not", a name or the order of two roles
changes ("Convert 5 km to miles" and "Convert 50 km to miles" have a cosine of
0.85). The guard looks at the words of the two queries: rules reject pairs with
different numbers, a negation on one side only, opposite words, or the same words
in another order, and a logistic verifier trained by ``python -m
training.guard_verifier`` scores the rest from the features in
``cache_service.pair_features``. Below the cosine of its training pairs (0.80) the
verifier is not trusted, and the candidate is rejected. The stored side is the entry's
normalized text, so names are only detected in the incoming query.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from cache_service.errors import GuardArtifactError
from cache_service.pair_features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    QueryTokens,
    pair_features,
    tokenize,
    words_reordered,
)
from cache_service.settings import CacheSettings

ARTIFACT_FORMAT = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "verifier.json"
RETRAIN_HINT = (
    "Retrain it with `python -m training.guard_verifier --data-dir PATH`, or set "
    "guard_verifier_dir to a folder written by that command."
)
# Rules that reject on their own, by feature name. Each one flags a meaning change
# that no amount of shared wording makes safe.
RULE_FEATURES = ("number_mismatch", "negation_mismatch", "opposite_words")
# Reasons of the checks that are not verifier features, so the verifier's training
# never saw them. Each one only rejects more.
REORDERED_WORDS = "reordered_words"
BELOW_VERIFIED_COSINE = "below_verified_cosine"


def default_verifier_dir() -> Path:
    """Return the folder of the committed verifier artifact."""
    return Path(__file__).resolve().parent / "models" / "guard"


@dataclass(frozen=True)
class GuardDecision:
    """Verdict on one candidate. ``reason`` names the rule, or "verifier"."""

    accepted: bool
    reason: str = ""
    score: float = 1.0


@dataclass(frozen=True)
class Verifier:
    """A logistic model over standardized pair features, and its accept threshold."""

    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    threshold: float
    version: str
    # Training read only pairs with at least this cosine. Below it the verifier's
    # score means nothing, so such candidates are rejected.
    min_cosine: float

    def score(self, features: list[float]) -> float:
        """Compute the estimated probability that one stored answer serves both."""
        logit = self.intercept
        for value, mean, scale, weight in zip(
            features, self.means, self.scales, self.coefficients, strict=True
        ):
            logit += weight * (value - mean) / scale
        return 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))

    @classmethod
    def load(cls, directory: Path) -> Verifier:
        """Read and check the artifact in ``directory``.

        Raises:
            GuardArtifactError: a file is missing or unreadable, the weights do not
                match the manifest's hash, or the feature version or names differ.
        """
        manifest = _read_json(directory / MANIFEST_FILE)
        weights_path = directory / WEIGHTS_FILE
        try:
            weights_bytes = weights_path.read_bytes()
        except OSError as error:
            raise GuardArtifactError(
                f"cannot read guard verifier weights {weights_path}: {error}. "
                + RETRAIN_HINT
            ) from None
        _check_manifest(manifest, hashlib.sha256(weights_bytes).hexdigest(), directory)
        weights = json.loads(weights_bytes)
        min_cosine = manifest.get("training_min_cosine")
        if not isinstance(min_cosine, int | float) or not 0.0 <= min_cosine <= 1.0:
            raise GuardArtifactError(
                f"guard verifier manifest in {directory} is invalid: "
                f"training_min_cosine must be a number from 0 to 1; got "
                f"{min_cosine!r}. " + RETRAIN_HINT
            )
        return cls(
            means=tuple(weights["means"]),
            scales=tuple(weights["scales"]),
            coefficients=tuple(weights["coefficients"]),
            intercept=float(weights["intercept"]),
            threshold=float(weights["threshold"]),
            version=str(manifest["version"]),
            min_cosine=float(min_cosine),
        )


class FalseHitGuard:
    """Decides whether a candidate above the cosine threshold may be served.

    Thread-safe, because it has no mutable state. One check took a thread CPU p50
    of 55-89 us and a p99 of 277-405 us on a busy 2-core machine, over 2,000
    quora_qqp pairs (``python -m training.guard_verifier --evaluate-only``, and a
    loop timing the same checks).
    """

    def __init__(self, verifier: Verifier | None) -> None:
        # Without a verifier only the rules apply.
        self._verifier = verifier
        self._rule_positions = [FEATURE_NAMES.index(name) for name in RULE_FEATURES]

    @property
    def verifier(self) -> Verifier | None:
        return self._verifier

    def check(
        self, query: QueryTokens, stored_normalized: str, cosine: float
    ) -> GuardDecision:
        """Judge serving the entry stored as ``stored_normalized`` to ``query``.

        A lookup with ``min_similarity`` below the verifier's training range (the
        router's degraded mode uses 0.7) gets no hit from the semantic layer
        below that range, because the verifier was never shown such pairs.
        """
        if self._verifier is not None and cosine < self._verifier.min_cosine:
            return GuardDecision(
                accepted=False, reason=BELOW_VERIFIED_COSINE, score=0.0
            )
        stored = tokenize(stored_normalized)
        features = pair_features(cosine, stored, query)
        for name, position in zip(RULE_FEATURES, self._rule_positions, strict=True):
            if features[position]:
                return GuardDecision(accepted=False, reason=name, score=0.0)
        if words_reordered(stored, query):
            return GuardDecision(accepted=False, reason=REORDERED_WORDS, score=0.0)
        if self._verifier is None:
            return GuardDecision(accepted=True)
        score = self._verifier.score(features)
        if score < self._verifier.threshold:
            return GuardDecision(accepted=False, reason="verifier", score=score)
        return GuardDecision(accepted=True, score=score)


def _read_json(path: Path) -> dict[str, object]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise GuardArtifactError(
            f"cannot read guard verifier manifest {path}: {error}. " + RETRAIN_HINT
        ) from None
    if not isinstance(document, dict):
        raise GuardArtifactError(
            f"guard verifier manifest {path} must be a JSON object. " + RETRAIN_HINT
        )
    return document


def _check_manifest(
    manifest: dict[str, object], weights_sha256: str, directory: Path
) -> None:
    expected = {
        "format": ARTIFACT_FORMAT,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "weights_sha256": weights_sha256,
    }
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise GuardArtifactError(
                f"guard verifier in {directory} is invalid: manifest {key} is "
                f"{manifest.get(key)!r}, expected {value!r}. " + RETRAIN_HINT
            )


def build_guard(settings: CacheSettings) -> FalseHitGuard | None:
    """Return the guard that ``settings`` ask for, or None when it is off.

    Raises:
        GuardArtifactError: the verifier artifact is missing or invalid.
    """
    if settings.false_hit_guard == "off":
        return None
    if settings.false_hit_guard == "rules":
        return FalseHitGuard(None)
    directory = settings.guard_verifier_dir or default_verifier_dir()
    return FalseHitGuard(Verifier.load(directory))
