"""The complexity classifier: maps a query's text to a tier (simple, medium, complex).

An artifact is a folder with `model.skops` (a fitted scikit-learn pipeline saved
with skops, which loads without pickle) and `manifest.json` (versions, labels, the
decision policy, the SHA-256 of the model file, the training-data fingerprint and
held-out metrics). `ComplexityClassifier.load` checks the manifest against this
code and rejects an artifact that does not match.

Some queries get a fixed tier from a rule before the model runs, because the
training data contains nothing like them (see `rule_for_query`):

- empty or whitespace-only: simple, since there is nothing to answer;
- longer than LONG_QUERY_CHARS: complex, since long inputs need a strong model with
  a long context window;
- mostly non-Latin letters (not English): medium, since the model was trained on
  English text only and a cheap model is weakest on other languages;
- code without natural language: complex, since coding tasks are where cheap models
  fail most often.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops.io

from router_service.features import (
    FEATURE_VERSION,
    code_line_fraction,
    non_ascii_letter_fraction,
    truncate_query,
)
from router_service.linear_scoring import LinearScorer

TIERS: tuple[str, ...] = ("simple", "medium", "complex")

ARTIFACT_FORMAT = "querygate-complexity-classifier/1"
MODEL_FILE = "model.skops"
MANIFEST_FILE = "manifest.json"
RETRAIN_HINT = "Retrain with `make train` (python -m training train --data-dir DIR)."

LONG_QUERY_CHARS = 16_000
NON_ENGLISH_LETTER_FRACTION = 0.5
CODE_ONLY_LINE_FRACTION = 0.6

# Types inside model.skops that skops does not trust by default: the feature steps
# of router_service.features, and the two scikit-learn types that the gradient
# boosting candidate adds (skops 0.16). Loading rejects any other untrusted type.
TRUSTED_TYPES: tuple[str, ...] = (
    "router_service.features.CharNgramHasher",
    "router_service.features.TextStatistics",
    "router_service.features.ToDense",
    "router_service.features.TruncateQueries",
    "router_service.features.WordNgramHasher",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.feature_selection._univariate_selection.chi2",
)


class ClassifierArtifactError(Exception):
    """The artifact is missing, altered, or was built for other code versions."""


@dataclass(frozen=True)
class TierPrediction:
    """The chosen tier, the probability of each tier, and what decided the tier.

    `rule` is "model" when the classifier decided. Otherwise it is the name of the
    fixed rule that applied ("empty", "too_long", "non_english", "code_only"), and
    the probabilities put 1.0 on the rule's tier.
    """

    tier: str
    probabilities: Mapping[str, float]
    rule: str = "model"


@dataclass(frozen=True)
class DecisionPolicy:
    """Rule that turns class probabilities into a tier.

    With thresholds set, the tier is complex when P(complex) reaches
    `complex_threshold`, else medium when P(medium) + P(complex) reaches
    `medium_threshold`, else simple. Without thresholds it is the most probable
    tier. When even the highest probability is below `min_confidence`, the model
    is unsure and the tier moves one tier up.
    """

    complex_threshold: float | None = None
    medium_threshold: float | None = None
    min_confidence: float = 0.0
    target: dict[str, Any] = field(default_factory=dict)

    def decide(self, probabilities: Mapping[str, float]) -> str:
        """Return the tier for one query's class probabilities."""
        if self.complex_threshold is None or self.medium_threshold is None:
            tier = max(TIERS, key=lambda name: probabilities[name])
        elif probabilities["complex"] >= self.complex_threshold:
            tier = "complex"
        elif probabilities["medium"] + probabilities["complex"] >= (
            self.medium_threshold
        ):
            tier = "medium"
        else:
            tier = "simple"
        unsure = max(probabilities.values()) < self.min_confidence
        if unsure and tier != TIERS[-1]:
            tier = TIERS[TIERS.index(tier) + 1]
        return tier

    def to_json(self) -> dict[str, Any]:
        return {
            "complex_threshold": self.complex_threshold,
            "medium_threshold": self.medium_threshold,
            "min_confidence": self.min_confidence,
            "target": self.target,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DecisionPolicy:
        return cls(
            complex_threshold=data.get("complex_threshold"),
            medium_threshold=data.get("medium_threshold"),
            min_confidence=float(data.get("min_confidence", 0.0)),
            target=dict(data.get("target", {})),
        )


def rule_for_query(query: str) -> str | None:
    """Name the fixed rule that decides this query's tier, or None for the model.

    The language and code rules read the same prefix as the features
    (`truncate_query`), so their cost stays bounded.
    """
    if not query.strip():
        return "empty"
    if len(query) > LONG_QUERY_CHARS:
        return "too_long"
    prefix = truncate_query(query)
    if non_ascii_letter_fraction(prefix) >= NON_ENGLISH_LETTER_FRACTION:
        return "non_english"
    code_only = code_line_fraction(prefix) >= CODE_ONLY_LINE_FRACTION
    if code_only and "?" not in prefix:
        return "code_only"
    return None


RULE_TIERS: Mapping[str, str] = {
    "empty": "simple",
    "too_long": "complex",
    "non_english": "medium",
    "code_only": "complex",
}


def default_artifact_dir() -> Path:
    """Return the folder of the artifact committed with the package."""
    return Path(__file__).resolve().parent / "models" / "complexity"


def file_sha256(path: Path) -> str:
    """Hash a file's bytes with SHA-256 and return the hex digest."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sklearn_minor_version(version: str = sklearn.__version__) -> str:
    """Cut a scikit-learn version to major.minor, the level at which models load."""
    return ".".join(version.split(".")[:2])


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and check an artifact's manifest against the running code.

    Raises:
        ClassifierArtifactError: the manifest is missing, unreadable or mismatched.
    """
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ClassifierArtifactError(
            f"classifier artifact not found: {path} is missing. {RETRAIN_HINT}"
        ) from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ClassifierArtifactError(
            f"classifier manifest {path} is not valid JSON ({error}). {RETRAIN_HINT}"
        ) from error
    expected = {
        "format": ARTIFACT_FORMAT,
        "feature_version": FEATURE_VERSION,
        "sklearn_version": sklearn_minor_version(),
        "labels": list(TIERS),
    }
    for key, value in expected.items():
        found = manifest.get(key) if isinstance(manifest, dict) else None
        if key == "sklearn_version" and isinstance(found, str):
            found = sklearn_minor_version(found)
        if found != value:
            raise ClassifierArtifactError(
                f"classifier manifest {path}: {key} must be {value!r} for this "
                f"code; got {found!r}. {RETRAIN_HINT}"
            )
    return dict(manifest)


class ComplexityClassifier:
    """A loaded artifact. `predict` only reads shared state, so it is thread-safe."""

    def __init__(
        self, pipeline: Any, manifest: Mapping[str, Any], policy: DecisionPolicy
    ) -> None:
        self._pipeline = pipeline
        self.manifest = manifest
        self.policy = policy
        self.version: str = str(manifest["version"])
        classes = [str(name) for name in pipeline.classes_]
        self._column_by_tier = {tier: classes.index(tier) for tier in TIERS}
        self._columns = [self._column_by_tier[tier] for tier in TIERS]
        self._linear = LinearScorer.from_pipeline(pipeline)

    @classmethod
    def load(cls, directory: Path) -> ComplexityClassifier:
        """Load and check the artifact in `directory`.

        Raises:
            ClassifierArtifactError: the manifest or model file is missing, the
                model file's hash differs from the manifest, the file holds types
                outside TRUSTED_TYPES, or versions or labels do not match.
        """
        manifest = read_manifest(directory)
        model_path = directory / MODEL_FILE
        if not model_path.is_file():
            raise ClassifierArtifactError(
                f"classifier model file {model_path} is missing. {RETRAIN_HINT}"
            )
        if file_sha256(model_path) != manifest.get("model_sha256"):
            raise ClassifierArtifactError(
                f"classifier model file {model_path} does not match the SHA-256 in "
                f"its manifest, so it was altered or replaced. {RETRAIN_HINT}"
            )
        pipeline = load_pipeline(model_path)
        classes = sorted(str(name) for name in getattr(pipeline, "classes_", []))
        if classes != sorted(TIERS):
            raise ClassifierArtifactError(
                f"classifier model in {model_path} predicts {classes}, not the tiers "
                f"{list(TIERS)}. {RETRAIN_HINT}"
            )
        policy = DecisionPolicy.from_json(manifest.get("decision_policy", {}))
        return cls(pipeline, manifest, policy)

    def predict_probabilities(self, queries: Sequence[str]) -> np.ndarray:
        """Return model probabilities, one row per query, columns in TIERS order."""
        if self._linear is not None:
            raw = self._linear.predict_proba(queries)
        else:
            raw = self._pipeline.predict_proba(list(queries))
        return np.asarray(raw[:, self._columns], dtype=np.float64)

    def predict(self, query: str) -> TierPrediction:
        """Classify one query. No string makes it raise (tested on random text)."""
        rule = rule_for_query(query)
        if rule is not None:
            tier = RULE_TIERS[rule]
            one_hot = {name: float(name == tier) for name in TIERS}
            return TierPrediction(tier, one_hot, rule)
        if self._linear is not None:
            row = self._linear.probabilities(query)[self._columns]
        else:
            row = self.predict_probabilities([query])[0]
        probabilities = dict(zip(TIERS, row.tolist(), strict=True))
        return TierPrediction(self.policy.decide(probabilities), probabilities)


def load_pipeline(path: Path) -> Any:
    """Load a skops file, trusting only skops defaults and TRUSTED_TYPES.

    Raises:
        ClassifierArtifactError: the file is not a skops file or contains other types.
    """
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as error:  # skops raises many types on a corrupt zip
        raise ClassifierArtifactError(
            f"classifier model file {path} is not a readable skops file ({error}). "
            f"{RETRAIN_HINT}"
        ) from error
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise ClassifierArtifactError(
            f"classifier model file {path} contains untrusted types {unexpected}; "
            f"only {list(TRUSTED_TYPES)} are allowed. {RETRAIN_HINT}"
        )
    return skops.io.load(path, trusted=list(untrusted))
