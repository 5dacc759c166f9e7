"""Shared Optuna studies: opening one on the right inputs, and making exactly ``n_trials`` COMPLETE trials.

The study lives in a persistent Optuna storage, by default under a name derived from the task
instance and a fingerprint of its inputs (data, search space, objective, metric, validation), so a
retry on the same inputs loads it and runs only the trials still missing (``n_trials`` COMPLETE trials
in all), while a task cleared after new data arrived starts a new study. Trials a dead attempt of this
task instance left RUNNING are failed and re-queued when the next attempt starts, whatever the retry
delay.

Given a ``study_name``, several task instances share one study (Optuna's distributed mode) and make
exactly ``n_trials`` COMPLETE trials together (see ``claim_slot``). Each finishes when the study has its
``n_trials``: meanwhile it waits for the others' trials, and replaces any whose worker died once
Optuna's heartbeat finds it stale. A study carries the fingerprint of the inputs it was made from; a
task on other inputs is refused. Nothing here knows MLflow: :mod:`~airflow_mlops.tuning.parent_run`
tracks a task's share of the study.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.tracking.tags import DEFINITION_ATTR, FINGERPRINT_ATTR, OWNER_ATTR, SURPLUS_ATTR
from airflow_mlops.tuning.objective import TrialObjective
from airflow_mlops.tuning.request import TuningRequest

#: A study gives up when it has made this many trials per trial asked for (failed and pruned ones replaced).
_MAX_ATTEMPTS_PER_TRIAL = 10
#: How long a task joining a new study waits for its creator to stamp the fingerprint on it.
_STAMP_WAIT_SECONDS = 5.0
#: How often a task of a shared study, waiting for the other workers' last trials, looks at the study.
_WAIT_POLL_SECONDS = 1.0


class TuningError(MlopsError):
    """The study could not produce a result (for example, every trial failed)."""


def state_counts(study: Any) -> Counter[str]:
    """How many of the study's trials are in each state (by name), as the storage has them now."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


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
    deadline = time.monotonic() + _STAMP_WAIT_SECONDS
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


def optimize_to_n_trials(study: Any, storage: Any, objective: TrialObjective, request: TuningRequest,
                         on_trial_done: Callable[[Any, Any], None]) -> None:
    """Run trials until the study has ``n_trials`` COMPLETE ones (failed and pruned trials are replaced).

    When the trials other workers of a shared study are running would make up the rest, wait for them,
    failing any whose worker died: re-queued, it is taken here. ``on_trial_done(study, trial)`` is told of
    each trial of this worker as it ends (an Optuna callback).
    """
    deadline = time.monotonic() + request.timeout_seconds if request.timeout_seconds else None

    def trial_in_slot(trial: Any) -> float:
        claim_slot(trial, request.n_trials)
        return objective(trial)

    def stop_when_full(_study: Any, _trial: Any) -> None:
        """Optuna callback: make no trial that could only give up its slot to the trials under way."""
        states = state_counts(study)
        if states["COMPLETE"] + states["RUNNING"] >= request.n_trials:
            study.stop()

    while True:
        states = state_counts(study)
        remaining = deadline - time.monotonic() if deadline else None
        if states["COMPLETE"] >= request.n_trials or (remaining is not None and remaining <= 0):
            return
        free = request.n_trials - states["COMPLETE"] - states["RUNNING"]
        if free <= 0:
            time.sleep(_WAIT_POLL_SECONDS if remaining is None else min(_WAIT_POLL_SECONDS, remaining))
            fail_trials_of_dead_attempts(study, storage, objective.owner, shared=request.shared)
            continue
        study.optimize(trial_in_slot, n_trials=free, n_jobs=request.n_jobs, timeout=remaining,
                       catch=(Exception,), callbacks=[on_trial_done, stop_when_full], gc_after_trial=False)
        attempts = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]
        complete = sum(t.state.name == "COMPLETE" for t in attempts)
        if complete == 0 and objective.last_error is not None and all(t.state.name == "FAIL" for t in attempts):
            raise TuningError(f"every trial of study {study.study_name} failed; last error: {objective.last_error}")
        if len(attempts) >= _MAX_ATTEMPTS_PER_TRIAL * request.n_trials and complete < request.n_trials:
            raise TuningError(
                f"study {study.study_name}: only {complete} of {request.n_trials} trials completed "
                f"in {len(attempts)} attempts (the others failed or were pruned); last error: {objective.last_error}"
            )
