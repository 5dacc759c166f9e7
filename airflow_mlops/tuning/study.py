"""Resumable Optuna studies tracked in MLflow: one parent run per task instance, one nested run per trial.

The study lives in a persistent Optuna storage, by default under a name derived from the task
instance and a fingerprint of its inputs (data, search space, objective, metric, validation), so a
retry on the same inputs loads it and runs only the trials still missing (``n_trials`` COMPLETE trials
in all), while a task cleared after new data arrived starts a new study. Trials a dead attempt of this
task instance left RUNNING are failed and re-queued when the next attempt starts, whatever the retry
delay. The retry resumes the parent run of the earlier attempt, so all its trials sit under one parent.

Given a ``study_name``, several task instances share one study (Optuna's distributed mode) and make
exactly ``n_trials`` COMPLETE trials together (see ``claim_slot``). Each writes the trials it ran
under its own parent run, and finishes when the study has its ``n_trials``: meanwhile it waits for the
others' trials, and replaces any whose worker died once Optuna's heartbeat finds it stale. A study
carries the fingerprint of the inputs it was made from; a task on other inputs is refused.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from airflow_mlops.tuning.objective import OWNER_ATTR, SURPLUS_ATTR, TrialObjective
from airflow_mlops.tuning.request import TuningRequest
from airflow_mlops.tuning.summary import log_study_summary
from airflow_mlops.tuning.trial_runs import STUDY_TAG, TrialRunWriter

#: A study gives up when it has made this many trials per trial asked for (failed and pruned ones replaced).
_MAX_ATTEMPTS_PER_TRIAL = 10
#: Study user attrs: the fingerprint of the inputs a study was made from, and what it digests.
FINGERPRINT_ATTR = "airflow_mlops.fingerprint"
DEFINITION_ATTR = "airflow_mlops.definition"
#: How long a task joining a new study waits for its creator to stamp the fingerprint on it.
_STAMP_WAIT_S = 5.0
#: How often a task of a shared study, waiting for the other workers' last trials, looks at the study.
_WAIT_POLL_S = 1.0


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


def _states(study: Any) -> Counter[str]:
    """How many of the study's trials are in each state (by name), as the storage has them now."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def _owner(request: TuningRequest) -> str:
    """The task instance a trial belongs to (dag, run, task, map index)."""
    identity = request.training.identity
    return ".".join(str(identity.get(key)) for key in ("dag_id", "run_id", "task_id", "map_index"))


def open_study(storage: Any, request: TuningRequest) -> Any:
    """The request's study, created, or loaded if it exists and was made from the same inputs.

    Its creator stamps it with the fingerprint of its inputs (after what the fingerprint digests) before
    any trial; a task joining it on other inputs is refused here, before any trial or MLflow run, so a
    study never mixes data snapshots, search spaces or metrics. A study still unstamped after a short
    wait (its creator died before stamping it, or an earlier version made it) is stamped by the joiner.
    """
    import optuna

    options = {"study_name": request.study_name, "storage": storage, "sampler": request.sampler, "pruner": request.pruner}
    try:
        study, stamp = optuna.create_study(direction=request.direction, **options), None
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**options)
        stamp = _stamp_of(study)
    if stamp is None:
        study.set_user_attr(DEFINITION_ATTR, _plain(request.definition()))
        study.set_user_attr(FINGERPRINT_ATTR, request.fingerprint())
    elif stamp != request.fingerprint():
        stored, current = study.user_attrs.get(DEFINITION_ATTR) or {}, _plain(request.definition())
        differing = sorted(key for key in stored.keys() | current.keys() if stored.get(key) != current.get(key))
        raise MlopsError(
            f"study {request.study_name!r} was made from other inputs than this task's (differing: "
            f"{', '.join(differing) or 'fingerprint'}): the tasks sharing a study must tune on the same data snapshot, "
            "search space, objective, metric and validation; give this task another study_name, or delete the study"
        )
    return study


def _stamp_of(study: Any) -> str | None:
    """The fingerprint on an existing study, waiting briefly for the creator of one with no trial yet to stamp it."""
    deadline = time.monotonic() + _STAMP_WAIT_S
    while (stamp := study.user_attrs.get(FINGERPRINT_ATTR)) is None and time.monotonic() < deadline \
            and not study.get_trials(deepcopy=False):
        time.sleep(0.1)
    return stamp


def _plain(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as JSON values (what a study user attr holds), to store and compare."""
    return json.loads(json.dumps(definition, sort_keys=True, default=str))


def claim_slot(trial: Any, n_trials: int) -> None:
    """Give the trial up (PRUNED, marked surplus, never counted) if ``n_trials`` trials numbered before it
    are COMPLETE, RUNNING or WAITING, and stop this worker's ``optimize``; called first in every trial.

    This makes a shared study exact. Optuna numbers trials in creation order, under a lock on the study,
    and a trial that ends COMPLETE is WAITING, RUNNING or COMPLETE from its creation on: of any
    ``n_trials + 1`` complete trials, the last-numbered saw the others ahead and gave up. A RUNNING trial
    counts until it is failed (a dead worker's, once stale); a slot given up for a trial that then failed
    is taken again by the workers, who stop only when the study has ``n_trials`` COMPLETE.
    """
    import optuna
    from optuna.trial import TrialState

    pending = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(t.number < trial.number for t in trial.study.get_trials(deepcopy=False, states=pending))
    if ahead >= n_trials:
        trial.set_user_attr(SURPLUS_ATTR, True)
        trial.study.stop()  # the worker's loop decides what next: wait for the others, or take a freed slot
        raise optuna.TrialPruned(f"surplus: {ahead} trials before it are complete or under way")


def fail_trials_of_dead_attempts(study: Any, storage: Any, owner: str, shared: bool = False) -> None:
    """Fail (and re-queue, through the storage's stale-trial callback) trials dead workers left RUNNING.

    Called between this task's trials (when an attempt starts, and while it waits for other workers).
    Trials Optuna's heartbeat finds stale go first. Airflow runs one attempt of a task instance at a
    time, so a RUNNING trial of its own (``owner``) then belongs to a dead attempt: failed at once,
    without waiting for its heartbeat to go stale, so a retry sooner than the grace period leaves
    nothing RUNNING. So is a trial a worker died with before marking it (no owner yet): at once in a
    study of its own, and in a ``shared`` study once it started longer than the grace period ago (a live
    worker marks its trial at once; a dead one may not have sent a heartbeat to go stale). Other
    workers' trials are left to their heartbeat.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    retry = storage.get_heartbeat_stale_trial_callback()
    study_id = storage.get_study_id_from_name(study.study_name)
    interval = storage.get_heartbeat_interval()
    unmarked_since = datetime.now() - timedelta(seconds=storage.grace_period or 2 * interval) if interval else None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        marked = trial.user_attrs.get(OWNER_ATTR)
        if marked is None:
            dead = not shared or (unmarked_since is not None and trial.datetime_start < unmarked_since)
        else:
            dead = marked == owner
        if not dead:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            failed = storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker of a shared study failed it first
            continue
        if failed and retry is not None:
            retry(study, storage.get_trial(trial_id))


def _optimize_to_n_trials(study: Any, storage: Any, objective: TrialObjective, writer: TrialRunWriter,
                          request: TuningRequest) -> None:
    """Run trials until the study has ``n_trials`` COMPLETE ones (failed and pruned trials are replaced).

    When the trials other workers of a shared study are running would make up the rest, wait for them,
    failing any whose worker died: re-queued, it is taken here.
    """
    deadline = time.monotonic() + request.timeout if request.timeout else None

    def trial_in_slot(trial: Any) -> float:
        claim_slot(trial, request.n_trials)
        return objective(trial)

    def stop_when_full(_study: Any, _trial: Any) -> None:
        """Optuna callback: make no trial that could only give up its slot to the trials under way."""
        states = _states(study)
        if states["COMPLETE"] + states["RUNNING"] >= request.n_trials:
            study.stop()

    while True:
        states = _states(study)
        remaining = deadline - time.monotonic() if deadline else None
        if states["COMPLETE"] >= request.n_trials or (remaining is not None and remaining <= 0):
            return
        free = request.n_trials - states["COMPLETE"] - states["RUNNING"]
        if free <= 0:
            time.sleep(_WAIT_POLL_S if remaining is None else min(_WAIT_POLL_S, remaining))
            fail_trials_of_dead_attempts(study, storage, objective.owner, shared=request.shared)
            continue
        study.optimize(trial_in_slot, n_trials=free, n_jobs=request.n_jobs, timeout=remaining,
                       catch=(Exception,), callbacks=[writer.on_trial_done, stop_when_full], gc_after_trial=False)
        attempts = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]
        complete = sum(t.state.name == "COMPLETE" for t in attempts)
        if complete == 0 and objective.last_error is not None and all(t.state.name == "FAIL" for t in attempts):
            raise TuningError(f"every trial of study {study.study_name} failed; last error: {objective.last_error}")
        if len(attempts) >= _MAX_ATTEMPTS_PER_TRIAL * request.n_trials and complete < request.n_trials:
            raise TuningError(
                f"study {study.study_name}: only {complete} of {request.n_trials} trials completed "
                f"in {len(attempts)} attempts (the others failed or were pruned); last error: {objective.last_error}"
            )


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
                            _states(study)["COMPLETE"])

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
            fail_trials_of_dead_attempts(study, storage, owner, shared=request.shared)
            writer = TrialRunWriter(client, experiment_id, parent_id, request, owner)
            objective = TrialObjective(request, data, owner)
            try:
                _optimize_to_n_trials(study, storage, objective, writer, request)
            finally:
                writer.wait()
            writer.backfill(study)  # its trials an earlier attempt finished but never wrote, stale ones included
            complete = _states(study)["COMPLETE"]
            if complete == 0:
                raise TuningError(f"study {name} has no complete trial (timeout {request.timeout}s)")
            log_study_summary(study, request, complete)
    return TuningResult(study.best_params, study.best_value, name, parent_id, experiment_id, complete)
