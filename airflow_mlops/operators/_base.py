"""What training and tuning operators share: a data snapshot in, a tracked MLflow run out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseOperator

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.snapshot_store import restore_snapshot_ref
from airflow_mlops.links.mlflow import MlflowRunLink
from airflow_mlops.operators._lineage import OpenLineageMixin, SnapshotUse
from airflow_mlops.utils.airflow_context import task_identity, task_instance_url
from airflow_mlops.utils.imports import source_file


class SnapshotModelOperator(OpenLineageMixin, BaseOperator):
    """Base for operators that fit models on a data snapshot and track the result in MLflow.

    OpenLineage: the snapshot as input dataset; the MLflow run and the code digests in the
    ``airflowMlops`` run facet.

    :param input_snapshot: snapshot URI ``<store>#<id>``, an id in ``store``, or a DataSnapshotOperator's
        result (``snapshot_task.output``) (templated).
    :param target: label column (templated).
    :param estimator: sklearn estimator, Pipeline, or dotted class path (``sklearn.linear_model.Ridge``).
    :param features: feature columns (templated); default all but the target.
    :param experiment_name: MLflow experiment (templated); default the dag_id.
    :param store: snapshot store for a bare id (templated); default the store under AIRFLOW_HOME.
    :param seed: seeds Python, NumPy, every unset ``random_state`` (and the sampler); logged.
    :param test_size: held-out fraction for evaluation.
    :param mlflow_conn_id: Airflow ``mlflow`` connection; the embedded store when not configured.
    :param aws_conn_id: AWS connection for ``s3://`` snapshot stores.
    """

    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#d6e4f0"

    def __init__(
        self,
        *,
        input_snapshot: str | dict[str, Any],
        target: str | None = None,
        estimator: Any = None,
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
        self.features = features
        self.experiment_name = experiment_name
        self.store = store
        self.seed = seed
        self.test_size = test_size
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self._active_run_id: str | None = None

    def training_request(self, context: Any, *, hyperparams: dict[str, Any], train_fn: Callable[..., Any] | None) -> Any:
        """Resolve the snapshot (restored locally once per id) and describe the training in plain values.

        The snapshot and the code version are noted for OpenLineage (``start_lineage`` first).
        """
        from airflow_mlops.tracking.environment import code_version
        from airflow_mlops.tracking.request import TrainingRequest

        identity = task_identity(context)
        uri, snapshot_id, data_path = restore_snapshot_ref(self.input_snapshot, self.store, self.aws_conn_id,
                                                        argument="input_snapshot")
        self._lineage.inputs.append(SnapshotUse(uri, data_path))
        code = code_version(getattr(context.get("dag"), "fileloc", None), source_file(train_fn))
        self._lineage.code(code.tags)
        return TrainingRequest(
            data_path=data_path,
            snapshot_id=snapshot_id,
            snapshot_uri=uri,
            target=self.target,
            hyperparams=hyperparams,
            features=list(self.features) if self.features else None,
            estimator=self.estimator,
            train_fn=train_fn,
            seed=self.seed,
            test_size=self.test_size,
            identity=identity,
            code=code,
            run_name=f"{identity['task_id']}.try{identity['try_number']}",
            task_instance_url=task_instance_url(context),
        )

    def run_started(self, context: Any, hook: MlflowHook, experiment_id: str, run_id: str, what: str) -> None:
        """Remember the run (for ``on_kill``) and link the task to it while it is still running; the log
        line says ``what`` the run is (``training run``, ``study parent run``) and for which task."""
        self._active_run_id = run_id
        self._lineage.run.update(mlflowRunId=run_id, mlflowExperimentId=experiment_id)
        url = hook.run_url(experiment_id, run_id)
        MlflowRunLink.persist(context, url)
        ti = context["ti"]
        task = ti.task_id + (f"[{ti.map_index}]" if getattr(ti, "map_index", -1) not in (None, -1) else "")
        self.log.info("MLflow %s %s of task %s: %s", what, run_id, task, url)

    def on_kill(self) -> None:
        """Airflow is stopping the task (timeout, mark-failed): end the run FAILED rather than leave it RUNNING."""
        if self._active_run_id is None:
            return
        from airflow_mlops.tracking.tags import ERROR_TAG

        with MlflowHook(self.mlflow_conn_id).tracking_session() as client:
            client.set_tag(self._active_run_id, ERROR_TAG, "killed: Airflow stopped the task")
            client.set_terminated(self._active_run_id, status="FAILED")
