"""SparkETLOperator: a PySpark transformation from data snapshots to a new, derived snapshot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator

from airflow_mlops.config import mlops_home
from airflow_mlops.errors import InputError
from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook, restore_snapshot_ref
from airflow_mlops.hooks.spark import SparkApplication, SparkHook
from airflow_mlops.links.spark import SparkApplicationLink, SparkUILink
from airflow_mlops.operators._input import bad_input_fails_at_once
from airflow_mlops.operators._lineage import OpenLineageMixin, SnapshotUse
from airflow_mlops.operators.snapshot import declare_snapshot_asset
from airflow_mlops.utils.airflow_context import task_identity


class SparkETLOperator(OpenLineageMixin, BaseOperator):
    """Run a PySpark transformation on data snapshots and record its Parquet output as a new snapshot.

    The output snapshot's record names its input snapshots (``parents``), the transformation and a
    digest of its code, and each table's rows and schema, so lineage shows raw data -> features.
    Output is reproducible: ``output_partitions`` hash partitions, rows sorted, part files named by
    index, so the same input gives the same snapshot id on ``local[*]`` and on a cluster (for a
    transformation with exact arithmetic). Only ids, counts and schemas go to XCom.

    Spark runs on the master of the Airflow Spark connection ``spark_conn_id`` (the apache-spark
    provider's ``spark`` type: standalone, YARN, Kubernetes), or ``local[*]`` without one. The app
    name is ``<dag_id>.<task_id>``; the session is stopped in every case and ``on_kill`` cancels the
    job. Spark properties reach spark-submit in a properties file only the task's user can read,
    never on its command line. Inputs are restored to local files under AIRFLOW_HOME and the output
    is staged there too: on a multi-host cluster, ``staging_dir`` and AIRFLOW_HOME must be on storage
    every executor shares.

    Extra links, set as soon as Spark names the application: "Spark driver UI (while running)", the
    driver's web UI of a ``transform`` (it stops with the application), and "Spark application", its
    page on a standalone master's web UI, which stays after the run, for a connection whose extra
    ``master-web-ui`` names that UI (``{"master-web-ui": "http://spark-master:8080"}``; spark-submit
    logs the id of an ``application`` at INFO level).

    OpenLineage: the input snapshots (not plain paths) as inputs, the new snapshot as output (with
    each table's schema), the transformation's code digest in the ``airflowMlops`` run facet.

    :param inputs: ``{name: snapshot}`` (templated): a DataSnapshotOperator or SparkETLOperator result
        (``task.output``), ``<store>#<id>``, an id in ``store``, or an existing file or directory path;
        text naming both a path and a snapshot (a folder ``deadbeef``) is refused, see ``etl.spark.input_path``.
    :param transform: callable or dotted path ``transform(spark, inputs, **transform_kwargs)`` taking
        ``{name: DataFrame}`` and returning a DataFrame, or ``{name: DataFrame}`` (a folder each).
    :param application: a PySpark file (or jar) run through ``spark-submit`` instead of ``transform``;
        it gets ``application_args`` then ``--output DIR`` and ``--input NAME=PATH`` per input and
        must write Parquet under DIR.
    :param transform_kwargs: keyword arguments for ``transform`` (templated).
    :param application_args: arguments for ``application`` (templated).
    :param input_format: ``csv``, ``parquet`` or ``json``; default from the files' extension.
    :param output_partitions: Parquet files per output table.
    :param sort_by: columns fixing the row order (and partitioning); default every sortable column.
    :param store: snapshot store of the output, and of bare input ids (templated); default under AIRFLOW_HOME.
    :param spark_conn_id: Airflow Spark connection (templated); ``local[*]`` for ``None`` or for
        ``spark_default`` when that is not configured, so one DAG runs on a laptop and on a cluster.
    :param conf: Spark properties (templated); they override the connection's ``spark.*`` extras.
    :param staging_dir: where output is written before it is recorded; default under AIRFLOW_HOME (templated).
    :param aws_conn_id: AWS connection for ``s3://`` snapshot stores.
    :param asset: the Asset this task updates; default ``snapshot/<dag_id>/<task_id>``.
    :return: ``{"snapshot_id", "uri", "files", "bytes", "parents", "tables"}`` as XCom, where
        ``tables`` maps each table (``""`` for a single one) to its ``rows``, ``files`` and ``schema``.
    """

    template_fields: Sequence[str] = (
        "inputs", "store", "conf", "transform_kwargs", "application_args", "staging_dir", "spark_conn_id",
    )
    template_fields_renderers = {"conf": "json", "transform_kwargs": "json"}
    operator_extra_links = (SparkUILink(), SparkApplicationLink())
    ui_color = "#f4d9c6"

    def __init__(
        self,
        *,
        inputs: dict[str, Any],
        transform: Callable[..., Any] | str | None = None,
        application: str | None = None,
        transform_kwargs: dict[str, Any] | None = None,
        application_args: list[str] | None = None,
        input_format: str | None = None,
        output_partitions: int = 1,
        sort_by: list[str] | None = None,
        store: str | None = None,
        spark_conn_id: str | None = SparkHook.default_conn_name,
        conf: dict[str, Any] | None = None,
        staging_dir: str | None = None,
        aws_conn_id: str | None = "aws_default",
        asset: Asset | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inputs = inputs
        self.transform = transform
        self.application = application
        self.transform_kwargs = transform_kwargs
        self.application_args = application_args
        self.input_format = input_format
        self.output_partitions = output_partitions
        self.sort_by = sort_by
        self.store = store
        self.spark_conn_id = spark_conn_id
        self.conf = conf
        self.staging_dir = staging_dir
        self.aws_conn_id = aws_conn_id
        self.asset = declare_snapshot_asset(self, asset)
        self._spark: SparkHook | None = None

    def _resolve_inputs(self) -> list[Any]:
        """Each input as local files: a snapshot restored under AIRFLOW_HOME, or an existing path as is."""
        if not isinstance(self.inputs, dict) or not self.inputs:
            raise InputError(f"inputs must be a non-empty mapping of names to snapshots or paths, got {self.inputs!r}")
        return [self._resolve_input(name, value) for name, value in self.inputs.items()]

    def _resolve_input(self, name: str, value: Any) -> Any:
        """One input: a path as is, or a snapshot (id, URI or XCom result) restored."""
        from airflow_mlops.etl.spark import EtlInput, input_path

        path = input_path(name, value)
        if path is not None:
            return EtlInput(name, path, data_format=self.input_format)
        uri, snapshot_id, path = restore_snapshot_ref(value, self.store, self.aws_conn_id, argument=f"inputs[{name!r}]")
        return EtlInput(name, path, snapshot_id, uri, self.input_format)

    @bad_input_fails_at_once
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.etl.job import SparkJob

        job = SparkJob(transform=self.transform, application=self.application, transform_kwargs=self.transform_kwargs,
                       application_args=self.application_args or (), partitions=self.output_partitions,
                       sort_by=self.sort_by)
        inputs = self._resolve_inputs()
        store = SnapshotStoreHook(self.store, self.aws_conn_id).get_conn()
        self._spark = SparkHook(self.spark_conn_id, self.conf, app_name=f"{self.dag_id}.{self.task_id}",
                                on_start=lambda application: self._link(context, application))
        lineage = self.start_lineage(context)
        lineage.inputs += [SnapshotUse(item.uri, item.path) for item in inputs if item.snapshot_id]
        record, tables = job.run(self._spark, store, inputs, staging_root=self.staging_dir or mlops_home() / "etl-staging",
                                 airflow=task_identity(context))
        lineage.outputs.append(SnapshotUse(record.uri, record=record))
        if record.extra["code"].get("code_digest"):
            lineage.run["codeDigests"] = {"transform": record.extra["code"]["code_digest"]}
        self.log.info("Snapshot %s from %s: %s", record.snapshot_id, record.parents or "paths",
                      {name or "output": table["rows"] for name, table in tables.items()})
        result = {"snapshot_id": record.snapshot_id, "uri": record.uri, "files": record.files, "bytes": record.bytes,
                  "parents": record.parents, "tables": tables}
        context["outlet_events"][self.asset].extra = {key: result[key] for key in ("snapshot_id", "uri", "parents")}
        return result

    def _link(self, context: Any, application: SparkApplication) -> None:
        """Log where the application runs and link its pages, while it runs."""
        self.log.info("Spark application %s on %s; driver UI (while it runs): %s; page on the master's web UI: %s",
                      application.app_id, application.master, application.driver_ui or "unknown",
                      application.master_page or "none")
        SparkUILink.persist(context, application.driver_ui)
        SparkApplicationLink.persist(context, application.master_page)

    def on_kill(self) -> None:
        """Airflow is stopping the task: cancel the Spark jobs, or kill the spark-submit job."""
        if self._spark is not None:
            self._spark.cancel()
