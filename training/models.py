"""The candidate classifiers: scikit-learn pipelines over the shared text features."""

from __future__ import annotations

from collections.abc import Callable

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_selection import SelectKBest, chi2
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from router_service.features import ToDense, build_feature_union

# Columns kept for the tree model. HistGradientBoosting needs dense input, and 300
# chi-squared-selected columns keep the dense matrix and the fit time small.
TREE_SELECTED_FEATURES = 300


def logistic_regression(seed: int) -> Pipeline:
    """Build multinomial logistic regression on all hashed n-grams and statistics.

    Classes are weighted inversely to their frequency, because simple questions
    are rare in the data and macro-F1 counts every tier equally.
    """
    # NOTE: on the text-v2 features saga stops at max_iter with a ConvergenceWarning.
    # Validation macro-F1 equals that of the text-v1 model, which converged in
    # about 200 epochs (lbfgs needed over 300).
    model = LogisticRegression(
        C=1.0, solver="saga", max_iter=500, class_weight="balanced", random_state=seed
    )
    return Pipeline([("features", build_feature_union()), ("model", model)])


def gradient_boosting(seed: int) -> Pipeline:
    """Build histogram gradient boosting on chi-squared-selected feature columns."""
    model = HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.15,
        early_stopping=False,
        class_weight="balanced",
        random_state=seed,
    )
    return Pipeline(
        [
            ("features", build_feature_union()),
            ("select", SelectKBest(chi2, k=TREE_SELECTED_FEATURES)),
            ("dense", ToDense()),
            ("model", model),
        ]
    )


CANDIDATES: dict[str, Callable[[int], Pipeline]] = {
    "logistic_regression": logistic_regression,
    "gradient_boosting": gradient_boosting,
}
