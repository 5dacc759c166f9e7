"""BatchPredictOperator: a registered model scores a data snapshot into a new, derived snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator

from airflow_mlops.config import mlops_home
from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook, restore_snapshot_ref
from airflow_mlops.hooks.spark import SparkHook
from airflow_mlops.lineage.datasets import model_dataset
from airflow_mlops.operators._input import bad_input_fails_at_once
from airflow_mlops.operators._lineage import OpenLineageMixin, SnapshotUse
from airflow_mlops.operators.snapshot import declare_snapshot_asset
from airflow_mlops.predict.engine import DEFAULT_SPARK_THRESHOLD_BYTES
from airflow_mlops.utils.airflow_context import task_identity


class BatchPredictOperator(OpenLineageMixin, BaseOperator):
    """Score a data snapshot with an MLflow model and record the key columns and predictions as a new snapshot.

    An alias is resolved to its version when the task starts and ``models:/NAME/VERSION`` is used
    from then on, so a promotion while the task runs never mixes versions. The input is checked
    against the model signature before anything is written (every missing or mistyped column in
    one error). Scoring runs in pandas, or in Spark through ``mlflow.pyfunc.spark_udf`` when
    ``spark_conn_id`` is given or the input is larger than ``spark_threshold_bytes`` (``local[*]``
    without a connection). The output snapshot's record names the model (name, version, run, URI)
    and has the input snapshot as its parent; nothing is recorded when scoring fails.
    OpenLineage: the input snapshot and the model version (a registered one) as inputs, the
    predictions snapshot as output, the model's training run as ``modelRunId``.

    :param model: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``, or an
        MlflowTrainOperator result (``train.output``) (templated).
    :param input_snapshot: snapshot URI ``<store>#<id>``, an id in ``store``, or a snapshot-producing
        task's result (templated).
    :param key_columns: columns identifying rows, copied to the output and sorting it (templated).
    :param prediction_column: name of the prediction column (for a model returning one column).
    :param store: snapshot store of the output and of a bare input id (templated); default under AIRFLOW_HOME.
    :param spark_conn_id: Airflow Spark connection to score on (templated); ``None`` scores in pandas
        unless the input is above ``spark_threshold_bytes``, then on ``local[*]``.
    :param spark_threshold_bytes: input size from which Spark scores.
    :param conf: Spark properties (templated).
    :param mlflow_conn_id: Airflow ``mlflow`` connection; the embedded store when not configured.
    :param staging_dir: where output is written before it is recorded; default under AIRFLOW_HOME (templated).
    :param aws_conn_id: AWS connection for ``s3://`` snapshot stores.
    :param asset: the Asset this task updates; default ``snapshot/<dag_id>/<task_id>``.
    :return: ``{"snapshot_id", "uri", "rows", "model_name", "model_version", "model_uri", "run_id"}`` as XCom.
    """

    template_fields: Sequence[str] = ("model", "input_snapshot", "key_columns", "store", "spark_conn_id", "conf",
                                      "staging_dir")
    template_fields_renderers = {"conf": "json"}
    ui_color = "#e4d6f0"

    def __init__(
        self,
        *,
        model: str | dict[str, Any],
        input_snapshot: str | dict[str, Any],
        key_columns: list[str],
        prediction_column: str = "prediction",
        store: str | None = None,
        spark_conn_id: str | None = None,
        spark_threshold_bytes: int = DEFAULT_SPARK_THRESHOLD_BYTES,
        conf: dict[str, Any] | None = None,
        mlflow_conn_id: str | None = MlflowHook.default_conn_name,
        staging_dir: str | None = None,
        aws_conn_id: str | None = "aws_default",
        asset: Asset | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.input_snapshot = input_snapshot
        self.key_columns = key_columns
        self.prediction_column = prediction_column
        self.store = store
        self.spark_conn_id = spark_conn_id
        self.spark_threshold_bytes = spark_threshold_bytes
        self.conf = conf
        self.mlflow_conn_id = mlflow_conn_id
        self.staging_dir = staging_dir
        self.aws_conn_id = aws_conn_id
        self.asset = declare_snapshot_asset(self, asset)
        self._spark: SparkHook | None = None

    @bad_input_fails_at_once
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.predict import PredictInput, batch_predict, resolve_model
        from airflow_mlops.predict.engine import scores_in_spark

        lineage = self.start_lineage(context)
        hook = MlflowHook(self.mlflow_conn_id)
        with hook.tracking_session() as client:
            model = resolve_model(client, self.model)
            lineage.run["modelRunId"] = model.run_id
            if model.name:
                lineage.inputs.append(model_dataset(hook.settings.registry_uri, model.name, model.version))
            self.log.info("Scoring with %s (registered %s version %s, run %s)", model.model_uri, model.name,
                          model.version, model.run_id)
            uri, snapshot_id, path = restore_snapshot_ref(self.input_snapshot, self.store, self.aws_conn_id,
                                                          argument="input_snapshot")
            source = PredictInput(path, snapshot_id, uri)
            lineage.inputs.append(SnapshotUse(uri, path))
            spark_session = None
            if scores_in_spark(source, spark_requested=bool(self.spark_conn_id), threshold_bytes=self.spark_threshold_bytes):
                self._spark = SparkHook(self.spark_conn_id, self.conf, app_name=f"{self.dag_id}.{self.task_id}")
                spark_session = self._spark.session
            store = SnapshotStoreHook(self.store, self.aws_conn_id).get_conn()
            record, rows = batch_predict(
                store, source, model, key_columns=list(self.key_columns), prediction_column=self.prediction_column,
                staging_root=self.staging_dir or mlops_home() / "predict-staging", spark_session=spark_session,
                airflow=task_identity(context),
            )
        lineage.outputs.append(SnapshotUse(record.uri, record=record))
        self.log.info("Snapshot %s: %d predictions of %s by %s", record.snapshot_id, rows, snapshot_id, model.model_uri)
        result = {"snapshot_id": record.snapshot_id, "uri": record.uri, "rows": rows, "model_name": model.name,
                  "model_version": model.version, "model_uri": model.model_uri, "run_id": model.run_id}
        context["outlet_events"][self.asset].extra = {
            key: result[key] for key in ("snapshot_id", "uri", "model_name", "model_version", "model_uri")
        } | {"parents": [snapshot_id]}
        return result

    def on_kill(self) -> None:
        """Airflow is stopping the task: cancel the Spark jobs scoring."""
        if self._spark is not None:
            self._spark.cancel()
