"""MlflowTrainOperator: train a model on a data snapshot as one traceable, retry-safe MLflow run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.links.mlflow import MlflowRunLink
from airflow_mlops.operators._base import SnapshotModelOperator
from airflow_mlops.operators._input import bad_input_fails_at_once
from airflow_mlops.utils.templated import as_mapping


class MlflowTrainOperator(SnapshotModelOperator):
    """Train a model on a data snapshot and log it as one MLflow run that traces back to everything.

    The run records params, metrics, the model (with signature and input example), the input snapshot
    as an MLflow dataset whose digest is the snapshot id, the Airflow context (``airflow.*`` tags),
    the code version (git commit and dirtiness of the DAG folder, digests and copies of the DAG file
    and the training function's module) and the environment (Python, platform, CPUs, packages).

    Retry-safe: a task instance owns exactly one finished run per inputs. A retry returns the run an
    earlier attempt finished on the same snapshot and training definition (without training again);
    runs left RUNNING by a killed attempt are marked FAILED. Cleared after its upstream made new data
    (or after the training changed), the task trains a new run and tags the old one superseded.

    Built in: scikit-learn estimators and pipelines (``estimator=``, fit on a split, evaluated on the
    held-out part with ``mlflow.models.evaluate``: metrics and plots). Or ``train_fn(train_frame,
    hyperparams)`` returning a model (sklearn or Spark ML) or ``(model, extra_metrics)``.
    Common parameters (snapshot, target, estimator, seed, connections) are described on
    :class:`~airflow_mlops.operators._base.SnapshotModelOperator`.

    :param train_fn: callable or dotted path; used instead of ``estimator`` for full control.
    :param hyperparams: dict, or JSON text (templated); passed to the estimator or ``train_fn``. An
        ``OptunaTuneOperator``'s ``best_params`` fit here directly.
    :return: ``{"run_id", "experiment_id", "model_uri", "metrics"}`` as XCom.
    """

    template_fields: Sequence[str] = ("input_snapshot", "target", "hyperparams", "features", "experiment_name", "store")

    def __init__(
        self,
        *,
        train_fn: Callable[..., Any] | str | None = None,
        hyperparams: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_fn = train_fn
        self.hyperparams = hyperparams

    @bad_input_fails_at_once
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.tracking.data import prepare
        from airflow_mlops.tracking.runs import get_or_create_experiment
        from airflow_mlops.tracking.training import tracked_training
        from airflow_mlops.utils.imports import import_object

        lineage = self.start_lineage(context)
        train_fn = import_object(self.train_fn) if isinstance(self.train_fn, str) else self.train_fn
        request = self.training_request(context, hyperparams=as_mapping(self.hyperparams, "hyperparams"), train_fn=train_fn)
        prepared = prepare(request)

        hook = MlflowHook(self.mlflow_conn_id)
        with hook.tracking_session() as client:
            experiment_id = get_or_create_experiment(client, self.experiment_name or self.dag_id, hook.settings.artifact_root)
            result = tracked_training(
                client, experiment_id, request, prepared,
                on_run_started=lambda run_id: self.run_started(context, hook, experiment_id, run_id, "training run"),
            )
        self._active_run_id = None
        lineage.run.update(mlflowRunId=result.run_id, mlflowExperimentId=experiment_id)  # also a reused run
        if result.reused:
            self.log.info("Try %s reuses run %s, finished by an earlier attempt", request.identity["try_number"], result.run_id)
            MlflowRunLink.persist(context, hook.run_url(experiment_id, result.run_id))
        return result.to_xcom()
