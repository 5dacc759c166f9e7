"""A task instance's share of a study, tracked in MLflow: one parent run per task instance, one nested run per trial.

A retry on the same inputs resumes the parent run of the earlier attempt, so all the trials of a
task instance sit under one parent; a retry after the study finished returns its result without a
trial. In a shared study, each task instance writes the trials it ran under its own parent run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_mlops.tracking.data import PreparedData
from airflow_mlops.tracking.runs import fail_abandoned_runs, failure_recorded, previous_attempts, supersede
from airflow_mlops.tracking.tags import ERROR_TAG, FINGERPRINT_TAG, STORAGE_TAG, STUDY_TAG
from airflow_mlops.tracking.training import log_inputs, provenance_tags
from airflow_mlops.tuning.objective import TrialObjective
from airflow_mlops.tuning.request import TuningRequest
from airflow_mlops.tuning.study import (
    TuningError,
    fail_trials_of_dead_attempts,
    open_study,
    optimize_to_n_trials,
    state_counts,
)
from airflow_mlops.tuning.summary import log_study_summary
from airflow_mlops.tuning.trial_runs import TrialRunWriter


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


def _owner(request: TuningRequest) -> str:
    """The task instance a trial belongs to (dag, run, task, map index)."""
    identity = request.training.identity
    return ".".join(str(identity.get(key)) for key in ("dag_id", "run_id", "task_id", "map_index"))


def run_tuning(
    client: Any,
    experiment_id: str,
    storage: Any,
    request: TuningRequest,
    data: PreparedData,
    on_parent_started: Callable[[str], None] | None = None,
) -> TuningResult:
    """Run (or resume) a task instance's share of its study until the study has ``n_trials`` complete
    trials, tracked in MLflow."""
    import mlflow

    identity = request.training.identity
    current = request.fingerprint()
    name = request.study_name
    owner = _owner(request)
    study = open_study(storage, request)
    earlier = previous_attempts(client, experiment_id, identity, current)
    if request.shared or study.get_trials(deepcopy=False):
        # Neither a resumed study nor a worker of a shared one may replay suggestions from the same seed.
        study.sampler.reseed_rng()
    if (finished := earlier.reusable_run) is not None:  # an earlier attempt finished the study (died before XCom)
        return TuningResult(study.best_params, study.best_value, name, finished.info.run_id, experiment_id,
                            state_counts(study)["COMPLETE"])

    resumed = earlier.resumable_run
    resumed_id = resumed.info.run_id if resumed is not None else None
    fail_abandoned_runs(client, [r for r in earlier.abandoned_run_ids if r != resumed_id], identity.get("try_number"))
    tags = {**provenance_tags(request.training), STUDY_TAG: name, FINGERPRINT_TAG: current,
            STORAGE_TAG: request.storage_description}
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
            fail_trials_of_dead_attempts(study, storage, owner, shared=request.shared)
            writer = TrialRunWriter(client, experiment_id, parent_id, request, owner)
            objective = TrialObjective(request, data, owner)
            try:
                optimize_to_n_trials(study, storage, objective, request, writer.on_trial_done)
            finally:
                writer.wait()
            writer.backfill(study)  # its trials an earlier attempt finished but never wrote, stale ones included
            complete = state_counts(study)["COMPLETE"]
            if complete == 0:
                raise TuningError(f"study {name} has no complete trial (timeout {request.timeout_seconds}s)")
            log_study_summary(study, request, complete)
    return TuningResult(study.best_params, study.best_value, name, parent_id, experiment_id, complete)
