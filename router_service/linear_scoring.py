"""Class probabilities of a logistic-regression artifact, computed from its weights.

`Pipeline.predict_proba` on one query spends most of its time in scikit-learn's
input validation, the FeatureUnion and sparse-matrix building, not in arithmetic.
This path asks each fitted feature block of `router_service.features` for the
query's non-zero columns (`sparse_row`), multiplies them with the matching rows of
the coefficient matrix and applies the softmax itself. A test checks that it gives
the same probabilities as `predict_proba`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from router_service.features import TruncateQueries, truncate_query


class LinearScorer:
    """The fitted feature blocks and multinomial logistic-regression weights."""

    def __init__(
        self,
        blocks: Sequence[Any],
        coefficients: NDArray[np.float64],
        intercepts: NDArray[np.float64],
    ) -> None:
        self._blocks = list(blocks)
        self._offsets = np.cumsum([0] + [_width(block) for block in blocks[:-1]])
        self._coefficients = coefficients
        self._intercepts = intercepts

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> LinearScorer | None:
        """Build the scorer, or return None when the pipeline has another shape.

        The expected shape is `Pipeline([features, model])`, where `features` is
        `TruncateQueries` followed by a FeatureUnion of blocks that all have
        `sparse_row`, and `model` is a LogisticRegression with three or more
        classes (a binary model uses a sigmoid, not the softmax).
        """
        steps = getattr(pipeline, "named_steps", {})
        model, features = steps.get("model"), steps.get("features")
        if not isinstance(model, LogisticRegression) or len(steps) != 2:
            return None
        if len(model.classes_) < 3 or not isinstance(features, Pipeline):
            return None
        if len(features.steps) != 2:
            return None
        (_, truncate), (_, union) = features.steps
        if not isinstance(truncate, TruncateQueries):
            return None
        if not isinstance(union, FeatureUnion) or union.transformer_weights:
            return None
        blocks = [block for _, block in union.transformer_list]
        if not all(hasattr(block, "sparse_row") for block in blocks):
            return None
        if sum(_width(block) for block in blocks) != model.coef_.shape[1]:
            return None
        coefficients = np.ascontiguousarray(model.coef_.T, dtype=np.float64)
        intercepts = np.asarray(model.intercept_, dtype=np.float64)
        return cls(blocks, coefficients, intercepts)

    def probabilities(self, query: str) -> NDArray[np.float64]:
        """Return one query's class probabilities in the model's class order."""
        text = truncate_query(query)
        scores = self._intercepts.copy()
        for block, offset in zip(self._blocks, self._offsets, strict=True):
            columns, values = block.sparse_row(text)
            scores += values @ self._coefficients[offset + columns]
        scores -= scores.max()
        exponentials = np.exp(scores)
        return np.asarray(exponentials / exponentials.sum(), dtype=np.float64)

    def predict_proba(self, queries: Sequence[str]) -> NDArray[np.float64]:
        """Return class probabilities, one row per query, in the model's order."""
        result = np.empty((len(queries), len(self._intercepts)), dtype=np.float64)
        for index, query in enumerate(queries):
            result[index] = self.probabilities(query)
        return result


def _width(block: Any) -> int:
    # Hashed blocks carry n_features; TextStatistics names its columns.
    width = getattr(block, "n_features", None)
    if width is None:
        width = len(block.get_feature_names_out())
    return int(width)
