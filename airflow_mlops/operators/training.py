"""MLflowTrainOperator: train a model on a data snapshot as one traceable, retry-safe MLflow run."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_mlops.config import default_snapshot_store, mlops_home
from airflow_mlops.errors import MlopsError
from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook
from airflow_mlops.links.mlflow import MlflowRunLink
from airflow_mlops.utils.airflow_context import task_identity


def parse_hyperparams(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """Hyperparameters from a dict, or from JSON text (what a template such as ``{{ params.x | tojson }}`` renders)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise MlopsError(f"hyperparams are not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise MlopsError(f"hyperparams must be a mapping of names to values, got {type(value).__name__}")
    return dict(value)


class MLflowTrainOperator(BaseOperator):
    """Train a model on a data snapshot and log it as one MLflow run that traces back to everything.

    The run records params, metrics, the model (with signature and input example), the input snapshot
    as an MLflow dataset whose digest is the snapshot id, the Airflow context (``airflow.*`` tags),
    the code version (git commit and dirtiness of the DAG folder, digests and copies of the DAG file
    and the training function's module) and the environment (Python, platform, CPUs, packages).

    Retry-safe: a task instance owns exactly one finished run. A retry returns the run an earlier
    attempt finished (without training again); runs left RUNNING by a killed attempt are marked FAILED.
    Clearing a finished task therefore returns its run too: trigger a new DAG run to retrain.

    Built in: scikit-learn estimators and pipelines (``estimator=``, fit on a split, evaluated on the
    held-out part with ``mlflow.models.evaluate``: metrics and plots). Or ``train_fn(train_frame,
    hyperparams)`` returning a model (sklearn or Spark ML) or ``(model, extra_metrics)``.

    :param input_snapshot: snapshot URI ``<store>#<id>``, an id in ``store``, or a DataSnapshotOperator's
        result (``snapshot_task.output``) (templated).
    :param target: label column (templated); needed by ``estimator``.
    :param estimator: sklearn estimator, Pipeline, or dotted class path (``sklearn.linear_model.Ridge``).
    :param train_fn: callable or dotted path; used instead of ``estimator`` for full control.
    :param hyperparams: dict, or JSON text (templated); passed to the estimator or ``train_fn``.
    :param features: feature columns (templated); default all but the target.
    :param experiment_name: MLflow experiment (templated); default the dag_id.
    :param store: snapshot store for a bare id (templated); default the store under AIRFLOW_HOME.
    :param seed: seeds Python, NumPy and every unset ``random_state``; logged as a param.
    :param test_size: held-out fraction for evaluation.
    :param mlflow_conn_id: Airflow ``mlflow`` connection; the embedded store when not configured.
    :param aws_conn_id: AWS connection for ``s3://`` snapshot stores.
    :return: ``{"run_id", "experiment_id", "model_uri", "metrics"}`` as XCom.
    """

    template_fields: Sequence[str] = ("input_snapshot", "target", "hyperparams", "features", "experiment_name", "store")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#d6e4f0"

    def __init__(
        self,
        *,
        input_snapshot: str | dict[str, Any],
        target: str | None = None,
        estimator: Any = None,
        train_fn: Callable[..., Any] | str | None = None,
        hyperparams: dict[str, Any] | str | None = None,
        features: list[str] | None = None,
        experiment_name: str | None = None,
        store: str | None = None,
        seed: int = 42,
        test_size: float = 0.2,
        mlflow_conn_id: str | None = MlflowHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_snapshot = input_snapshot
        self.target = target
        self.estimator = estimator
        self.train_fn = train_fn
        self.hyperparams = hyperparams
        self.features = features
        self.experiment_name = experiment_name
        self.store = store
        self.seed = seed
        self.test_size = test_size
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self._active_run_id: str | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.snapshots import parse_snapshot_ref
        from airflow_mlops.tracking.environment import code_version
        from airflow_mlops.tracking.runs import get_or_create_experiment
        from airflow_mlops.tracking.training import TrainingRequest, prepare, tracked_training
        from airflow_mlops.utils.imports import import_object

        identity = task_identity(context)
        train_fn = import_object(self.train_fn) if isinstance(self.train_fn, str) else self.train_fn
        reference = self.input_snapshot["uri"] if isinstance(self.input_snapshot, dict) else self.input_snapshot
        store_uri, snapshot_id = parse_snapshot_ref(reference, self.store or default_snapshot_store())
        store = SnapshotStoreHook(store_uri, self.aws_conn_id).get_conn()
        snapshot_id = store.resolve(snapshot_id)
        request = TrainingRequest(
            data_path=store.materialize(snapshot_id, mlops_home() / "restored"),
            snapshot_id=snapshot_id,
            snapshot_uri=f"{store.uri}#{snapshot_id}",
            target=self.target,
            hyperparams=parse_hyperparams(self.hyperparams),
            features=list(self.features) if self.features else None,
            estimator=self.estimator,
            train_fn=train_fn,
            seed=self.seed,
            test_size=self.test_size,
            identity=identity,
            code=code_version(getattr(context.get("dag"), "fileloc", None), _source_file(train_fn)),
            run_name=f"{identity['task_id']}.try{identity['try_number']}",
        )
        prepared = prepare(request)

        hook = MlflowHook(self.mlflow_conn_id)
        with hook.tracking_session() as client:
            experiment_id = get_or_create_experiment(client, self.experiment_name or self.dag_id, hook.settings.artifact_root)

            def run_started(run_id: str) -> None:
                self._active_run_id = run_id
                MlflowRunLink.persist(context, hook.run_url(experiment_id, run_id))
                self.log.info("MLflow run %s: %s", run_id, hook.run_url(experiment_id, run_id))

            result = tracked_training(client, experiment_id, request, prepared, on_run_started=run_started)
        self._active_run_id = None
        if result.reused:
            self.log.info("Try %s reuses run %s, finished by an earlier attempt", identity["try_number"], result.run_id)
            MlflowRunLink.persist(context, hook.run_url(experiment_id, result.run_id))
        return result.to_xcom()

    def on_kill(self) -> None:
        """Airflow is stopping the task (timeout, mark-failed): end the run FAILED rather than leave it RUNNING."""
        if self._active_run_id is None:
            return
        from airflow_mlops.tracking.runs import ERROR_TAG

        with MlflowHook(self.mlflow_conn_id).tracking_session() as client:
            client.set_tag(self._active_run_id, ERROR_TAG, "killed: Airflow stopped the task")
            client.set_terminated(self._active_run_id, status="FAILED")


def _source_file(function: Callable[..., Any] | None) -> str | None:
    if function is None:
        return None
    try:
        return inspect.getsourcefile(function)
    except TypeError:
        return None
