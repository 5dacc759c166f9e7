"""Evaluating a trained model on the held-out split: MLflow's default evaluator (metrics and plots),
plus a residuals plot for regressors, which that evaluator does not draw."""

from __future__ import annotations

from typing import Any

from airflow_mlops.tracking.data import PreparedData
from airflow_mlops.tracking.quiet import integer_schema_hint_hidden


def evaluate(model: Any, model_uri: str, target: str, prepared: PreparedData) -> dict[str, float]:
    """Metrics of the logged model on the test split, logged on the active run; {} for other model kinds."""
    import mlflow

    if prepared.model_type is None or prepared.X_test is None:
        return {}
    if prepared.model_type == "regressor":
        log_residuals(model, prepared)
    with integer_schema_hint_hidden():
        result = mlflow.models.evaluate(
            model=model_uri,
            data=prepared.X_test.assign(**{target: prepared.y_test}),
            targets=target,
            model_type=prepared.model_type,
            evaluators=["default"],
            evaluator_config={"default": {"log_model_explainability": False}},
        )
    return {name: float(value) for name, value in result.metrics.items()}


def log_residuals(model: Any, prepared: PreparedData) -> None:
    """Residuals against predictions, and their spread, as ``residuals.png`` on the active run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    predicted = model.predict(prepared.X_test)
    residuals = prepared.y_test.to_numpy() - predicted
    figure, (scatter, histogram) = plt.subplots(1, 2, figsize=(10, 4))
    scatter.scatter(predicted, residuals, s=8, alpha=0.6)
    scatter.axhline(0, color="grey", linewidth=1)
    scatter.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals vs predicted")
    histogram.hist(residuals, bins=30)
    histogram.set(xlabel="residual", ylabel="count", title="Residual distribution")
    mlflow.log_figure(figure, "residuals.png")
    plt.close(figure)
