"""Each finished trial of a study as a nested MLflow run under the study's parent run."""

from __future__ import annotations

import json
import time
from typing import Any

from airflow_mlops.tracking.paging import all_pages
from airflow_mlops.tracking.runs import identity_tags
from airflow_mlops.tracking.tags import (
    ERROR_ATTR,
    ERROR_TAG,
    OWNER_ATTR,
    PARENT_RUN_TAG,
    STUDY_TAG,
    SURPLUS_ATTR,
    TRIAL_NUMBER_TAG,
    TRIAL_PARAMS_TAG,
    TRIAL_STATE_TAG,
)
from airflow_mlops.tuning.request import TuningRequest


def _ms(moment: Any) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


class TrialRunWriter:
    """Writes each finished trial of one task instance (``owner``) as a nested MLflow run, from the study's
    own record of it.

    Runs are written on a background thread as Optuna reports trials done, so MLflow shows the study
    as it progresses without slowing trials down; ``backfill`` writes any finished trial of the task
    instance that has no run yet (an attempt that died before writing it), so the study stays the one
    source of truth. Trials other task instances ran in a shared study are theirs to write, and a
    surplus trial (see ``study.claim_slot``), which ran nothing, gets no run.
    """

    def __init__(self, client: Any, experiment_id: str, parent_run_id: str, request: TuningRequest, owner: str):
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.experiment_id, self.parent_run_id, self.request = client, experiment_id, parent_run_id, request
        self.owner = owner
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trial-runs")
        self._pending: list[Any] = []

    def on_trial_done(self, study: Any, trial: Any) -> None:
        """Optuna callback: queue the trial's run."""
        self._pending.append(self._pool.submit(self._write, trial, set()))

    def backfill(self, study: Any) -> None:
        """Write runs for finished trials with no finished run under the parent (and finish half-written ones)."""
        runs = all_pages(
            self.client.search_runs, [self.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{self.parent_run_id}'"
        )
        by_trial = {run.data.tags.get(TRIAL_NUMBER_TAG): run for run in runs}
        retried = {t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
        for trial in study.get_trials(deepcopy=False):
            existing = by_trial.get(str(trial.number))
            if trial.state.is_finished() and self._ours(trial) and (existing is None or existing.info.status == "RUNNING"):
                self._write(trial, retried, existing.info.run_id if existing is not None else None)

    def _ours(self, trial: Any) -> bool:
        """Run by this task instance; in a study of its own, also one whose worker died before marking it."""
        marked = trial.user_attrs.get(OWNER_ATTR)
        return marked == self.owner or (marked is None and not self.request.shared)

    def wait(self) -> None:
        """Block until every queued run is written; re-raise the first writing error."""
        for future in self._pending:
            future.result()
        self._pool.shutdown()

    def _write(self, trial: Any, retried: set[Any], run_id: str | None = None) -> None:
        """Record one finished trial: create its run, or complete ``run_id`` that a dead attempt began."""
        from mlflow.entities import Metric, Param

        if trial.user_attrs.get(SURPLUS_ATTR):
            return
        state = trial.state.name
        error = trial.user_attrs.get(ERROR_ATTR)
        if state == "FAIL" and error is None:
            error = ("stale: its task attempt died; Optuna re-queued the trial" if trial.number in retried
                     else "failed without an error message")
        tags = {
            PARENT_RUN_TAG: self.parent_run_id, STUDY_TAG: self.request.study_name,
            TRIAL_NUMBER_TAG: str(trial.number), TRIAL_PARAMS_TAG: json.dumps(trial.params), TRIAL_STATE_TAG: state,
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
            metrics.append(Metric("trial_duration_seconds", duration, ended, 0))
        if trial.value is not None:
            metrics.append(Metric(self.request.metric, trial.value, ended, 0))
        # the running mean after each validation fold, as the pruner saw it
        metrics += [Metric(f"{self.request.metric}_running_mean", value, ended, step)
                    for step, value in sorted(trial.intermediate_values.items())]
        self.client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in trial.params.items()])
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status=status, end_time=ended)
