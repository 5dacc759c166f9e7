"""Resumable Optuna studies tracked in MLflow: one parent run per study, one nested run per trial.

The study lives in a persistent Optuna storage under a name derived from the task instance, so a
retry loads it and runs only the trials still missing (``n_trials`` is the total for the task
instance). Trials a killed attempt left RUNNING are failed and re-queued by Optuna's heartbeat
(``RetryHeartbeatStaleTrialCallback``, set on the storage by the hook). The retry resumes the
parent run of the earlier attempt, so all trials of a study sit under one parent.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.tracking.metrics import score
from airflow_mlops.tracking.runs import ERROR_TAG, fail_abandoned_runs, identity_tags, previous_attempts
from airflow_mlops.tracking.training import PreparedData, TrainingRequest, build_estimator, log_inputs, provenance_tags
from airflow_mlops.tuning.space import Dimension

PARENT_RUN_TAG = "mlflow.parentRunId"
#: A study gives up when failed trials outnumber the ones asked for this many times over.
_MAX_ATTEMPTS_PER_TRIAL = 10
_ERROR_ATTR = "airflow_mlops.error"
STUDY_TAG = "optuna.study_name"


class TuningError(MlopsError):
    """The study could not produce a result (for example, every trial failed)."""


def study_name(identity: dict[str, Any]) -> str:
    """The same name for every attempt of one task instance: ``dag_id.task_id.run_id[.map_index]``."""
    name = f"{identity['dag_id']}.{identity['task_id']}.{identity['run_id']}"
    map_index = identity.get("map_index")
    return name if map_index in (None, -1) else f"{name}.{map_index}"


@dataclass
class TuningRequest:
    training: TrainingRequest
    n_trials: int
    metric: str
    direction: str
    space: list[Dimension] = field(default_factory=list)
    objective: Callable[[Any, PreparedData], float] | None = None  # (trial, data) -> value
    n_jobs: int = 1
    timeout: float | None = None
    sampler: Any = None
    pruner: Any = None
    study_name: str = ""
    storage_description: str = ""


@dataclass
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    study_name: str
    parent_run_id: str
    experiment_id: str
    n_complete: int

    def to_xcom(self) -> dict[str, Any]:
        return {"best_params": self.best_params, "best_value": self.best_value, "study_name": self.study_name,
                "parent_run_id": self.parent_run_id, "n_complete": self.n_complete}


def _finished_count(study: Any) -> tuple[int, int]:
    """(complete, complete + pruned) trials of the study."""
    from optuna.trial import TrialState

    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    complete = states.count(TrialState.COMPLETE)
    return complete, complete + states.count(TrialState.PRUNED)


def _ms(moment: Any) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


class _Objective:
    """One trial: the built-in estimator path or the user's objective. A failure's message is kept on
    the trial (a user attribute, stored by Optuna) so its MLflow run can say why."""

    def __init__(self, request: TuningRequest, data: PreparedData):
        self.request, self.data = request, data
        self.last_error: str | None = None

    def __call__(self, trial: Any) -> float:
        import optuna

        try:
            if self.request.objective is not None:
                return float(self.request.objective(trial, self.data))
            params = {dimension.name: dimension.suggest(trial) for dimension in self.request.space}
            training = self.request.training
            model = build_estimator(training.estimator, params, training.seed).fit(self.data.X_train, self.data.y_train)
            return score(model, self.data.X_test, self.data.y_test, self.request.metric, self.data.model_type)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            self.last_error = f"{type(error).__name__}: {error}"
            trial.set_user_attr(_ERROR_ATTR, self.last_error[:5000])
            raise


class _TrialRunWriter:
    """Writes each finished trial as a nested MLflow run, from the study's own record of it.

    Runs are written on a background thread as Optuna reports trials done, so MLflow shows the study
    as it progresses without slowing trials down; ``backfill`` writes any finished trial that has no
    run yet (an attempt that died before writing it), so the study stays the one source of truth.
    """

    def __init__(self, client: Any, experiment_id: str, parent_run_id: str, request: TuningRequest):
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.experiment_id, self.parent_run_id, self.request = client, experiment_id, parent_run_id, request
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trial-runs")
        self._pending: list[Any] = []

    def on_trial_done(self, study: Any, trial: Any) -> None:
        """Optuna callback: queue the trial's run."""
        self._pending.append(self._pool.submit(self._write, trial, set()))

    def backfill(self, study: Any) -> None:
        """Write runs for finished trials with no finished run under the parent (and finish half-written ones)."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{self.parent_run_id}'", max_results=50000
        )
        by_trial = {run.data.tags.get("optuna.trial_number"): run for run in runs}
        retried = {t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
        for trial in study.get_trials(deepcopy=False):
            existing = by_trial.get(str(trial.number))
            if trial.state.is_finished() and (existing is None or existing.info.status == "RUNNING"):
                self._write(trial, retried, existing.info.run_id if existing is not None else None)

    def wait(self) -> None:
        """Block until every queued run is written; re-raise the first writing error."""
        for future in self._pending:
            future.result()
        self._pool.shutdown()

    def _write(self, trial: Any, retried: set[Any], run_id: str | None = None) -> None:
        """Record one finished trial: create its run, or complete ``run_id`` that a dead attempt began."""
        from mlflow.entities import Metric, Param

        state = trial.state.name
        error = trial.user_attrs.get(_ERROR_ATTR)
        if state == "FAIL" and error is None:
            error = ("stale: its task attempt died; Optuna re-queued the trial" if trial.number in retried
                     else "failed without an error message")
        tags = {
            PARENT_RUN_TAG: self.parent_run_id, STUDY_TAG: self.request.study_name,
            "optuna.trial_number": str(trial.number), "optuna.state": state,
            **identity_tags(self.request.training.identity),
            **({ERROR_TAG: error[:5000]} if error else {}),
        }
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, start_time=_ms(trial.datetime_start),
                                            tags=tags, run_name=f"trial-{trial.number}").info.run_id
        ended = _ms(trial.datetime_complete) or int(time.time() * 1000)
        metrics = []
        if trial.datetime_start is not None and trial.datetime_complete is not None:
            duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
            metrics.append(Metric("trial_duration_s", duration, ended, 0))
        if trial.value is not None:
            metrics.append(Metric(self.request.metric, trial.value, ended, 0))
        self.client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in trial.params.items()])
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status=status, end_time=ended)


def _fail_trials_of_dead_attempts(study: Any, storage: Any) -> None:
    """Fail (and re-queue, through the storage's stale-trial callback) trials a dead attempt left RUNNING.

    Optuna's heartbeat check finds trials whose heartbeat went silent, but skips trials that never
    recorded one (a worker killed between creating a trial and its first heartbeat). Airflow runs one
    attempt of a task instance at a time, so when an attempt starts, a trial still RUNNING after the
    heartbeat check and older than the grace period belongs to a dead attempt.
    """
    from datetime import datetime

    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    grace = getattr(storage, "grace_period", None) or 2 * (storage.get_heartbeat_interval() or 0)
    retry = storage.get_heartbeat_stale_trial_callback()
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.datetime_start and (datetime.now() - trial.datetime_start).total_seconds() > grace:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL) and retry is not None:
                retry(study, storage.get_trial(trial_id))


def _optimize_to_n_trials(study: Any, objective: _Objective, writer: _TrialRunWriter, request: TuningRequest) -> None:
    """Run trials until the study has ``n_trials`` finished ones (failed trials are replaced)."""
    deadline = time.monotonic() + request.timeout if request.timeout else None
    while True:
        _complete, finished = _finished_count(study)
        missing = request.n_trials - finished
        remaining = deadline - time.monotonic() if deadline else None
        if missing <= 0 or (remaining is not None and remaining <= 0):
            return
        study.optimize(objective, n_trials=missing, n_jobs=request.n_jobs, timeout=remaining,
                       catch=(Exception,), callbacks=[writer.on_trial_done], gc_after_trial=False)
        attempts = len(study.get_trials(deepcopy=False))
        if _finished_count(study)[1] == 0:
            raise TuningError(f"every trial of study {request.study_name} failed; last error: {objective.last_error}")
        if attempts >= _MAX_ATTEMPTS_PER_TRIAL * request.n_trials:
            raise TuningError(
                f"study {request.study_name}: only {_finished_count(study)[1]} of {request.n_trials} trials "
                f"finished in {attempts} attempts; last error: {objective.last_error}"
            )


def _log_study_summary(study: Any, request: TuningRequest, complete: int) -> None:
    """Best params and value, trial counts, optimization-history and importance plots on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import optuna.visualization.matplotlib as plots

    best = study.best_trial
    mlflow.log_params({f"best.{name}": value for name, value in best.params.items()})
    mlflow.log_metrics({f"best_{request.metric}": best.value, "n_complete_trials": complete})
    mlflow.set_tags({"optuna.best_trial": str(best.number), "optuna.best_params": json.dumps(best.params, default=str)})
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


def run_tuning(
    client: Any,
    experiment_id: str,
    storage: Any,
    request: TuningRequest,
    data: PreparedData,
    on_parent_started: Callable[[str], None] | None = None,
) -> TuningResult:
    """Run (or resume) the study of a task instance to ``n_trials`` finished trials, tracked in MLflow."""
    import mlflow
    import optuna

    identity = request.training.identity
    earlier = previous_attempts(client, experiment_id, identity)
    study = optuna.create_study(
        study_name=request.study_name, storage=storage, direction=request.direction,
        sampler=request.sampler, pruner=request.pruner, load_if_exists=True,
    )
    if study.get_trials(deepcopy=False):
        # A resumed study must not replay the earlier attempt's suggestions from the same seed.
        study.sampler.reseed_rng()
    if earlier.finished_run is not None:  # an earlier attempt finished the study (died before XCom)
        complete, _ = _finished_count(study)
        return TuningResult(study.best_params, study.best_value, request.study_name,
                            earlier.finished_run.info.run_id, experiment_id, complete)

    resumed = earlier.unfinished_runs[0].info.run_id if earlier.unfinished_runs else None
    fail_abandoned_runs(client, [r for r in earlier.abandoned_run_ids if r != resumed], identity.get("try_number"))
    tags = {**provenance_tags(request.training), STUDY_TAG: request.study_name,
            "optuna.storage": request.storage_description}
    with mlflow.start_run(run_id=resumed, experiment_id=experiment_id, run_name=request.training.run_name, tags=tags) as parent:
        parent_id = parent.info.run_id
        if on_parent_started is not None:
            on_parent_started(parent_id)
        try:
            if resumed is None:
                mlflow.log_params({"n_trials": request.n_trials, "metric": request.metric, "direction": request.direction,
                                   "seed": request.training.seed,
                                   "search_space": json.dumps([d.__dict__ for d in request.space], default=str)[:6000]})
                log_inputs(request.training, data.frame)
            else:
                if ERROR_TAG in earlier.unfinished_runs[0].data.tags:  # the earlier attempt's failure is not this one's
                    client.delete_tag(parent_id, ERROR_TAG)
                _fail_trials_of_dead_attempts(study, storage)
            writer = _TrialRunWriter(client, experiment_id, parent_id, request)
            objective = _Objective(request, data)
            try:
                _optimize_to_n_trials(study, objective, writer, request)
            finally:
                writer.wait()
            writer.backfill(study)  # trials an earlier attempt finished but never wrote, stale ones included
            complete, _ = _finished_count(study)
            if complete == 0:
                raise TuningError(f"study {request.study_name} has no complete trial (timeout {request.timeout}s)")
            _log_study_summary(study, request, complete)
        except Exception as error:
            mlflow.set_tag(ERROR_TAG, f"{type(error).__name__}: {error}"[:5000])
            raise
    return TuningResult(study.best_params, study.best_value, request.study_name, parent_id, experiment_id, complete)

