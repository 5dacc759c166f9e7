"""The study's outcome on its parent MLflow run: best params and value, counts, and plots."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from airflow_mlops.tracking.tags import BEST_PARAMS_TAG, BEST_TRIAL_TAG
from airflow_mlops.tuning.request import TuningRequest


def log_study_summary(study: Any, request: TuningRequest, complete: int) -> None:
    """Best params and value, trial counts, optimization-history and importance plots on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import optuna.visualization.matplotlib as plots

    best = study.best_trial
    mlflow.log_params({f"best.{name}": value for name, value in best.params.items()})
    mlflow.log_metrics({f"best_{request.metric}": best.value, "n_complete_trials": complete})
    mlflow.set_tags({BEST_TRIAL_TAG: str(best.number), BEST_PARAMS_TAG: json.dumps(best.params, default=str)})
    with tempfile.TemporaryDirectory() as staging:
        charts = {"optimization_history": plots.plot_optimization_history}
        if complete >= 2 and len(best.params) >= 1:
            charts["param_importances"] = plots.plot_param_importances
        for name, plot in charts.items():
            try:
                figure = plot(study).figure
            except (ValueError, RuntimeError):  # importances need trials that vary the params
                continue
            figure.savefig(Path(staging) / f"{name}.png", bbox_inches="tight")
            plt.close(figure)
        mlflow.log_artifacts(staging, artifact_path="plots")
