"""Resumable Optuna studies tracked in MLflow: one parent run per study, one nested run per trial.

The study lives in a persistent Optuna storage under a name derived from the task instance and a
fingerprint of its inputs (data, search space, objective, metric, validation), so a retry on the
same inputs loads it and runs only the trials still missing (``n_trials`` COMPLETE trials in all),
while a task cleared after new data arrived starts a new study. Trials a dead attempt of this task
instance left RUNNING are failed and re-queued when the next attempt starts, whatever the retry
delay; trials of other workers sharing the storage are left to Optuna's heartbeat. The retry
resumes the parent run of the earlier attempt, so all trials of a study sit under one parent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.tracking.data import PreparedData
from airflow_mlops.tracking.runs import (
    ERROR_TAG,
    FINGERPRINT_TAG,
    fail_abandoned_runs,
    failure_recorded,
    previous_attempts,
    supersede,
)
from airflow_mlops.tracking.training import log_inputs, provenance_tags
from airflow_mlops.tuning.objective import OWNER_ATTR, TrialObjective
from airflow_mlops.tuning.request import TuningRequest
from airflow_mlops.tuning.summary import log_study_summary
from airflow_mlops.tuning.trial_runs import STUDY_TAG, TrialRunWriter

#: A study gives up when it has made this many trials per trial asked for (failed and pruned ones replaced).
_MAX_ATTEMPTS_PER_TRIAL = 10


class TuningError(MlopsError):
    """The study could not produce a result (for example, every trial failed)."""


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


def _complete_count(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _owner(request: TuningRequest) -> str:
    """The task instance a trial belongs to (dag, run, task, map index)."""
    identity = request.training.identity
    return ".".join(str(identity.get(key)) for key in ("dag_id", "run_id", "task_id", "map_index"))


def fail_trials_of_dead_attempts(study: Any, storage: Any, owner: str) -> None:
    """Fail (and re-queue, through the storage's stale-trial callback) trials dead attempts left RUNNING.

    Airflow runs one attempt of a task instance at a time, so when an attempt starts, a RUNNING trial
    of its own (``owner``) belongs to a dead attempt: failed at once, without waiting for its heartbeat
    to go stale, so a retry sooner than the grace period leaves nothing RUNNING. So is a trial a
    worker died with before marking it (no owner yet) once Optuna's heartbeat finds it stale.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    retry = storage.get_heartbeat_stale_trial_callback()
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(OWNER_ATTR, owner) != owner:
            continue  # another worker's trial in a shared study: its own heartbeat decides
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL) and retry is not None:
            retry(study, storage.get_trial(trial_id))


def _optimize_to_n_trials(study: Any, objective: TrialObjective, writer: TrialRunWriter, request: TuningRequest) -> None:
    """Run trials until the study has ``n_trials`` COMPLETE ones (failed and pruned trials are replaced)."""
    deadline = time.monotonic() + request.timeout if request.timeout else None
    while True:
        missing = request.n_trials - _complete_count(study)
        remaining = deadline - time.monotonic() if deadline else None
        if missing <= 0 or (remaining is not None and remaining <= 0):
            return
        study.optimize(objective, n_trials=missing, n_jobs=request.n_jobs, timeout=remaining,
                       catch=(Exception,), callbacks=[writer.on_trial_done], gc_after_trial=False)
        attempts = len(study.get_trials(deepcopy=False))
        complete = _complete_count(study)
        if complete == 0 and objective.last_error is not None and all(
                t.state.name == "FAIL" for t in study.get_trials(deepcopy=False)):
            raise TuningError(f"every trial of study {study.study_name} failed; last error: {objective.last_error}")
        if attempts >= _MAX_ATTEMPTS_PER_TRIAL * request.n_trials and complete < request.n_trials:
            raise TuningError(
                f"study {study.study_name}: only {complete} of {request.n_trials} trials completed "
                f"in {attempts} attempts (the others failed or were pruned); last error: {objective.last_error}"
            )


def run_tuning(
    client: Any,
    experiment_id: str,
    storage: Any,
    request: TuningRequest,
    data: PreparedData,
    on_parent_started: Callable[[str], None] | None = None,
) -> TuningResult:
    """Run (or resume) the study of a task instance to ``n_trials`` complete trials, tracked in MLflow."""
    import mlflow
    import optuna

    identity = request.training.identity
    current = request.fingerprint()
    name = request.study_name
    earlier = previous_attempts(client, experiment_id, identity, current)
    study = optuna.create_study(study_name=name, storage=storage, direction=request.direction,
                                sampler=request.sampler, pruner=request.pruner, load_if_exists=True)
    if study.get_trials(deepcopy=False):
        # A resumed study must not replay the earlier attempt's suggestions from the same seed.
        study.sampler.reseed_rng()
    if (finished := earlier.reusable_run) is not None:  # an earlier attempt finished the study (died before XCom)
        return TuningResult(study.best_params, study.best_value, name, finished.info.run_id, experiment_id,
                            _complete_count(study))

    resumed = earlier.resumable_run
    resumed_id = resumed.info.run_id if resumed is not None else None
    fail_abandoned_runs(client, [r for r in earlier.abandoned_run_ids if r != resumed_id], identity.get("try_number"))
    tags = {**provenance_tags(request.training), STUDY_TAG: name, FINGERPRINT_TAG: current,
            "optuna.storage": request.storage_description}
    with mlflow.start_run(run_id=resumed_id, experiment_id=experiment_id, run_name=request.training.run_name, tags=tags) as parent:
        parent_id = parent.info.run_id
        if on_parent_started is not None:
            on_parent_started(parent_id)
        supersede(client, earlier.outdated_run_ids, parent_id)
        with failure_recorded():
            if resumed is None:
                mlflow.log_params({"n_trials": request.n_trials, "metric": request.metric, "direction": request.direction,
                                   "seed": request.training.seed, "test_size": request.training.test_size,
                                   "validation": request.validation.describe(data.model_type),
                                   "search_space": json.dumps([d.__dict__ for d in request.space], default=str)[:6000]})
                log_inputs(request.training, data.frame, request.definition())
            elif ERROR_TAG in resumed.data.tags:  # the earlier attempt's failure is not this one's
                client.delete_tag(parent_id, ERROR_TAG)
            fail_trials_of_dead_attempts(study, storage, _owner(request))
            writer = TrialRunWriter(client, experiment_id, parent_id, request)
            objective = TrialObjective(request, data, _owner(request))
            try:
                _optimize_to_n_trials(study, objective, writer, request)
            finally:
                writer.wait()
            writer.backfill(study)  # trials an earlier attempt finished but never wrote, stale ones included
            complete = _complete_count(study)
            if complete == 0:
                raise TuningError(f"study {name} has no complete trial (timeout {request.timeout}s)")
            log_study_summary(study, request, complete)
    return TuningResult(study.best_params, study.best_value, name, parent_id, experiment_id, complete)
