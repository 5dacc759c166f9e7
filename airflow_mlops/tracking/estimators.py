"""Building scikit-learn estimators from a class path or an instance, seeded, and telling their kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_mlops.errors import InputError, MlopsError
from airflow_mlops.utils.imports import import_object


class TrainingError(MlopsError):
    """Training itself failed (the user's function or the estimator raised)."""


class EstimatorError(TrainingError, InputError):
    """An estimator that cannot be built from its hyperparameters, or a model that cannot be logged."""


def build_estimator(estimator: Any, hyperparams: Mapping[str, Any], seed: int) -> Any:
    """A fresh sklearn estimator with ``hyperparams`` set and every unset ``random_state`` seeded."""
    from sklearn.base import clone

    try:
        if isinstance(estimator, str):
            model = import_object(estimator)(**hyperparams)
        else:
            model = clone(estimator).set_params(**hyperparams)
    except (TypeError, ValueError) as error:
        raise EstimatorError(f"hyperparams {dict(hyperparams)} do not fit estimator {estimator}: {error}") from None
    seeds = {
        name: seed
        for name, value in model.get_params(deep=True).items()
        if (name == "random_state" or name.endswith("__random_state")) and value is None and name not in hyperparams
    }
    return model.set_params(**seeds)


def model_type(model: Any) -> str | None:
    """``classifier`` or ``regressor`` for sklearn models (what MLflow's evaluator calls them), else None."""
    from sklearn.base import is_classifier, is_regressor

    return "classifier" if is_classifier(model) else "regressor" if is_regressor(model) else None


def is_sklearn(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        return False
    return isinstance(model, BaseEstimator)


def describe_estimator(estimator: Any) -> str:
    """A stable text naming an estimator and its settings (class path, or the instance's parameters)."""
    if estimator is None or isinstance(estimator, str):
        return str(estimator)
    params = estimator.get_params(deep=True)
    return f"{type(estimator).__module__}.{type(estimator).__qualname__}" + repr(sorted((k, repr(v)) for k, v in params.items()))
