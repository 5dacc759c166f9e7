"""One trial: the built-in estimator objective, scored on validation folds of the training part, or
the user's objective, given the training part only. Neither ever sees the held-out test split, which
is kept for the final training run, so the metric that run reports is not biased by the search."""

from __future__ import annotations

from typing import Any

from airflow_mlops.tracking.data import PreparedData
from airflow_mlops.tracking.estimators import build_estimator
from airflow_mlops.tracking.metrics import score
from airflow_mlops.tracking.tags import ERROR_ATTR, OWNER_ATTR
from airflow_mlops.tuning.request import TuningRequest


class TrialObjective:
    """Optuna objective. A failure's message is kept on the trial (a user attribute, stored by
    Optuna) so its MLflow run can say why; the built-in objective reports each fold's running mean
    so a pruner can stop a poor trial early."""

    def __init__(self, request: TuningRequest, data: PreparedData, owner: str):
        self.request, self.owner = request, owner
        self.data = data.training_part()
        self.folds = (request.validation.splits(self.data.X_train, self.data.y_train, data.model_type, request.training.seed)
                      if request.objective is None else [])
        self.last_error: str | None = None

    def __call__(self, trial: Any) -> float:
        import optuna

        trial.set_user_attr(OWNER_ATTR, self.owner)
        try:
            if self.request.objective is not None:
                return float(self.request.objective(trial, self.data))
            return self._cross_validated(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            self.last_error = f"{type(error).__name__}: {error}"
            trial.set_user_attr(ERROR_ATTR, self.last_error[:5000])
            raise

    def _cross_validated(self, trial: Any) -> float:
        import optuna

        params = {dimension.name: dimension.suggest(trial) for dimension in self.request.space}
        X, y, training = self.data.X_train, self.data.y_train, self.request.training
        scores = []
        for step, (fit_rows, valid_rows) in enumerate(self.folds):
            model = build_estimator(training.estimator, params, training.seed).fit(X.iloc[fit_rows], y.iloc[fit_rows])
            scores.append(score(model, X.iloc[valid_rows], y.iloc[valid_rows], self.request.metric, self.data.model_type))
            trial.report(sum(scores) / len(scores), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {step + 1} of {len(self.folds)}")
        return sum(scores) / len(scores)
