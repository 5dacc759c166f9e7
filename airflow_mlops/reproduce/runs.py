"""Re-creating a training run or a tuning trial from its MLflow record, and scoring it again.

A training run (and a study's parent run) records what its fingerprint digests in
``definition/request.json``: snapshot, estimator or training function, hyperparams with their types,
features, target, seed, test split, code digests; an estimator given as an instance is in
``definition/estimator.skops``. That is turned back into the same
:class:`~airflow_mlops.tracking.request.TrainingRequest`, checked to describe the same training, and
trained again by :func:`~airflow_mlops.tracking.training.tracked_training`, as the operator does. A
trial is re-scored by the tuning objective itself, given the trial's recorded params.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.reproduce.checks import OpenStore, check_code, code_differences, environment_differences, restore_verified
from airflow_mlops.reproduce.report import ReproductionReport, compare_metrics
from airflow_mlops.tracking.environment import code_version
from airflow_mlops.tracking.request import TrainingRequest
from airflow_mlops.tracking.runs import failure_recorded
from airflow_mlops.tracking.tags import (
    CODE_FILE_TAGS,
    PARENT_RUN_TAG,
    REPRODUCES_TAG,
    SNAPSHOT_URI_TAG,
    TRIAL_PARAMS_TAG,
)
from airflow_mlops.tracking.training import DEFINITION_ARTIFACT, ESTIMATOR_ARTIFACT, provenance_tags, tracked_training
from airflow_mlops.utils.imports import import_object, source_file

#: The report (JSON) on the new run.
REPORT_ARTIFACT = "reproduce/report.json"
_REQUIREMENTS_ARTIFACT = "environment/requirements.txt"


@dataclass
class RecordedRun:
    """A run's record as far as reproducing it goes."""

    run: Any
    definition: dict[str, Any]
    estimator: Any  # the estimator instance, the class path, or None (a training function)
    requirements: str | None  # None: the run recorded no installed packages

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def read_record(client: Any, run: Any) -> RecordedRun:
    """The run's recorded definition, estimator and installed packages, from its artifacts."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as staging:
        files = {artifact.path for folder in ("definition", "environment") for artifact in client.list_artifacts(run_id, folder)}
        if DEFINITION_ARTIFACT not in files:
            raise MlopsError(f"run {run_id} records no training definition ({DEFINITION_ARTIFACT}); only runs of "
                             "MlflowTrainOperator and OptunaTuneOperator trials can be reproduced")
        definition = json.loads(Path(client.download_artifacts(run_id, DEFINITION_ARTIFACT, staging)).read_text())
        estimator = None if definition["estimator"] == "None" else definition["estimator"]  # describe_estimator(None)
        if ESTIMATOR_ARTIFACT in files:
            from airflow_mlops.tracking.quiet import skops_io

            sio = skops_io()
            path = client.download_artifacts(run_id, ESTIMATOR_ARTIFACT, staging)
            # the run's own artifact, written from the estimator it was given: its types are the ones it used
            estimator = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        requirements = (Path(client.download_artifacts(run_id, _REQUIREMENTS_ARTIFACT, staging)).read_text()
                        if _REQUIREMENTS_ARTIFACT in files else None)
    return RecordedRun(run, definition, estimator, requirements)


def _imported(path: str | None) -> Any:
    """The function a recorded dotted path names, which must be importable now."""
    return import_object(path) if path else None


def _recorded_request(
    record: RecordedRun, *, open_store: OpenStore, allow_code_drift: bool, identity: dict[str, Any], run_name: str
) -> tuple[TrainingRequest, list[str]]:
    """The training request of the record, with the code present now, and the code differences allowed.

    Refuses changed code (unless allowed), and input data whose stored objects do not verify.
    """
    definition, tags = record.definition, record.run.data.tags
    train_fn = _imported(definition.get("train_fn"))
    code = code_version(tags.get(CODE_FILE_TAGS["dag file"][0]), source_file(train_fn))
    differences = check_code(code_differences(tags, code.tags), f"run {record.run_id}", allow_code_drift)
    snapshot_uri = tags.get(SNAPSHOT_URI_TAG)
    if not snapshot_uri:
        raise MlopsError(f"run {record.run_id} records no input snapshot ({SNAPSHOT_URI_TAG})")
    snapshot_id, data_path = restore_verified(open_store, snapshot_uri)
    request = TrainingRequest(
        data_path=data_path, snapshot_id=snapshot_id, snapshot_uri=snapshot_uri, target=definition["target"],
        hyperparams=definition.get("hyperparams", {}), features=definition["features"], estimator=record.estimator,
        train_fn=train_fn, seed=definition["seed"], test_size=definition["test_size"], identity=identity, code=code,
        run_name=run_name,
    )
    return request, differences


def _check_same(rebuilt: dict[str, Any], record: RecordedRun) -> None:
    """Refuse when the request rebuilt from the record is not the one recorded (code aside: checked on its own)."""
    def comparable(definition: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps({k: v for k, v in definition.items() if k != "code"}, sort_keys=True, default=str))

    now, then = comparable(rebuilt), comparable(record.definition)
    differing = sorted(key for key in set(now) | set(then) if now.get(key) != then.get(key))
    if differing:
        raise MlopsError(f"the record of run {record.run_id} rebuilds a different training ({', '.join(differing)} "
                         "differ); it cannot be reproduced exactly")


def _report(record: RecordedRun, kind: str, new_run_id: str, recorded: dict[str, float], reproduced: dict[str, float],
            tolerance: float, code: list[str], reference: str) -> ReproductionReport:
    environment = (environment_differences(record.requirements, record.run.data.tags)
                   if record.requirements is not None else None)
    return ReproductionReport(reference, kind, new_run_id, tolerance, compare_metrics(recorded, reproduced, tolerance),
                              environment, code)


def reproduce_training_run(client: Any, run: Any, *, open_store: OpenStore, tolerance: float, allow_code_drift: bool,
                           identity: dict[str, Any]) -> ReproductionReport:
    """Train again what an MlflowTrainOperator run trained, as a new run of its experiment, and compare metrics.

    MLflow's fluent API must point at ``client``'s server, as for :func:`tracked_training`.
    """
    from airflow_mlops.tracking.data import prepare

    record = read_record(client, run)
    run_id = record.run_id
    request, code = _recorded_request(record, open_store=open_store, allow_code_drift=allow_code_drift,
                                      identity=identity, run_name=f"reproduce.{run.info.run_name}")
    _check_same(request.run_definition(), record)
    result = tracked_training(client, run.info.experiment_id, request, prepare(request),
                              on_run_started=lambda new_run_id: client.set_tag(new_run_id, REPRODUCES_TAG, run_id))
    reproduced = client.get_run(result.run_id).data.metrics
    report = _report(record, "training run", result.run_id, run.data.metrics, reproduced, tolerance, code, run_id)
    client.log_text(result.run_id, report.to_json(), REPORT_ARTIFACT)
    return report


def reproduce_trial(client: Any, trial_run: Any, *, open_store: OpenStore, tolerance: float, allow_code_drift: bool,
                    identity: dict[str, Any]) -> ReproductionReport:
    """Score a tuning trial's params again as the study's objective did (same folds or validation split of the
    training part), as a new run of its experiment, and compare the trial's value."""
    import mlflow
    from optuna.trial import FixedTrial

    from airflow_mlops.tracking.data import prepare
    from airflow_mlops.tuning.objective import TrialObjective
    from airflow_mlops.tuning.request import TuningRequest, Validation
    from airflow_mlops.tuning.space import Dimension

    trial_id, tags = trial_run.info.run_id, trial_run.data.tags
    if TRIAL_PARAMS_TAG not in tags:
        raise MlopsError(f"trial run {trial_id} records no typed params ({TRIAL_PARAMS_TAG}); it cannot be re-scored exactly")
    params = json.loads(tags[TRIAL_PARAMS_TAG])
    record = read_record(client, client.get_run(tags[PARENT_RUN_TAG]))
    definition = record.definition
    metric = definition["metric"]
    if metric not in trial_run.data.metrics:
        raise MlopsError(f"trial run {trial_id} has no value ({metric}): it did not complete, so there is nothing to compare")
    training, code = _recorded_request(record, open_store=open_store, allow_code_drift=allow_code_drift,
                                       identity=identity, run_name=f"reproduce.{trial_run.info.run_name}")
    request = TuningRequest(
        training=training, n_trials=1, metric=metric, direction=definition["direction"],
        space=[Dimension(**{**dimension, "choices": tuple(dimension["choices"])}) for dimension in definition["space"]],
        objective=_imported(definition["objective"]), validation=Validation(**definition["validation"]),
    )
    _check_same(request.definition(), record)
    data = prepare(training)
    run_tags = {**provenance_tags(training), REPRODUCES_TAG: trial_id}
    with (mlflow.start_run(experiment_id=trial_run.info.experiment_id, run_name=training.run_name, tags=run_tags) as run,
          failure_recorded()):
        mlflow.log_params(params)
        value = TrialObjective(request, data, owner=f"reproduce.{trial_id}")(FixedTrial(params))
        mlflow.log_metric(metric, value)
    report = _report(record, "tuning trial", run.info.run_id, {metric: trial_run.data.metrics[metric]}, {metric: value},
                     tolerance, code, trial_id)
    client.log_text(run.info.run_id, report.to_json(), REPORT_ARTIFACT)
    return report
