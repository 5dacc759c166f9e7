"""Scalar model metrics with the names and definitions of ``mlflow.models.evaluate``'s default evaluator.

Training logs them through ``mlflow.models.evaluate`` (which adds plots); tuning computes one per
trial here, cheaply, so a tuned value and a trained run's metric are the same number for the same model.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops.errors import InputError

CLASSIFIER_METRICS = (
    "accuracy_score", "f1_score", "precision_score", "recall_score", "roc_auc", "precision_recall_auc", "log_loss",
)
REGRESSOR_METRICS = (
    "r2_score", "mean_absolute_error", "mean_squared_error", "root_mean_squared_error", "max_error",
    "mean_absolute_percentage_error",
)
_LOWER_IS_BETTER = {"log_loss", "mean_absolute_error", "mean_squared_error", "root_mean_squared_error",
                    "max_error", "mean_absolute_percentage_error"}
DEFAULT_METRIC = {"classifier": "roc_auc", "regressor": "root_mean_squared_error"}


def check_metric(metric: str, model_type: str | None) -> None:
    """Refuse a metric name the model type does not have (before any work starts)."""
    known = CLASSIFIER_METRICS if model_type == "classifier" else REGRESSOR_METRICS if model_type == "regressor" else ()
    if metric not in known:
        raise InputError(f"metric {metric!r} is not one of the {model_type} metrics: {', '.join(known)}")


def direction(metric: str) -> str | None:
    """``minimize`` for losses and errors, ``maximize`` for scores, None for a name we do not know."""
    if metric in _LOWER_IS_BETTER:
        return "minimize"
    return "maximize" if metric in CLASSIFIER_METRICS or metric in REGRESSOR_METRICS else None


def score(model: Any, X: Any, y: Any, metric: str, model_type: str) -> float:
    """One metric of a fitted model on held-out data, as MLflow's default evaluator computes it."""
    import numpy as np
    from sklearn import metrics as sk

    check_metric(metric, model_type)
    if model_type == "regressor":
        predicted = model.predict(X)
        if metric == "root_mean_squared_error":
            return float(np.sqrt(sk.mean_squared_error(y, predicted)))
        return float(getattr(sk, metric)(y, predicted))

    labels = np.unique(y)
    binary = len(labels) <= 2
    positive = labels[-1]  # MLflow's evaluator takes the largest label as the positive class
    if metric in ("roc_auc", "precision_recall_auc", "log_loss"):
        probabilities = model.predict_proba(X)
        if metric == "log_loss":
            return float(sk.log_loss(y, probabilities, labels=model.classes_))
        if metric == "precision_recall_auc":  # MLflow reports average precision under this name, binary only
            if not binary:
                raise InputError("precision_recall_auc is defined for binary classifiers only")
            return float(sk.average_precision_score(y, probabilities[:, list(model.classes_).index(positive)],
                                                    pos_label=positive))
        if binary:
            return float(sk.roc_auc_score(y, probabilities[:, list(model.classes_).index(positive)]))
        return float(sk.roc_auc_score(y, probabilities, average="weighted", multi_class="ovr", labels=model.classes_))
    predicted = model.predict(X)
    if metric == "accuracy_score":
        return float(sk.accuracy_score(y, predicted))
    options = {"average": "binary", "pos_label": positive} if binary else {"average": "weighted"}
    return float(getattr(sk, metric)(y, predicted, **options))
