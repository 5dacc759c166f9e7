"""SparkHook: an Airflow ``spark`` connection turned into a SparkSession or a spark-submit client."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from airflow_mlops.errors import MlopsError
from airflow_mlops.hooks.base import optional_connection

LOCAL_MASTER = "local[*]"


class SparkHook(BaseHook):
    """Spark on the master an Airflow Spark connection names (standalone, YARN, Kubernetes), ``local[*]`` without one.

    The connection is the apache-spark provider's ``spark`` type, parsed by its ``SparkSubmitHook``
    (host with scheme, port, extras ``deploy-mode``, ``queue``, ``namespace``); its extras whose names
    start with ``spark.`` become Spark conf, and ``conf`` given here overrides them. Conf values are
    never logged: they may hold keys.

    :param spark_conn_id: Airflow Spark connection; ``None``, or ``spark_default`` when it is not configured,
        runs on ``local[*]`` in the task process.
    :param conf: Spark properties for this job.
    :param app_name: the application name shown by the cluster manager.
    """

    conn_name_attr = "spark_conn_id"
    default_conn_name = "spark_default"
    hook_name = "Spark (airflow-mlops)"

    def __init__(
        self, spark_conn_id: str | None = default_conn_name, conf: dict[str, Any] | None = None, app_name: str = "airflow-mlops"
    ) -> None:
        super().__init__()
        # None runs on local[*]; an unknown id other than the default fails here, where the
        # provider's hook would silently fall back to yarn.
        self.spark_conn_id = spark_conn_id if optional_connection(self, spark_conn_id) else None
        self.conf = {key: str(value) for key, value in (conf or {}).items()}
        self.app_name = app_name

    def submit_hook(self, **submit_options: Any) -> Any:
        """The provider's ``SparkSubmitHook`` for this connection and conf (``local[*]`` without a connection).

        A driver in client mode runs this process's Python, so it imports what the task can.
        """
        conf = {**self._connection_conf, **self.conf}
        if self.settings["deploy_mode"] != "cluster":
            conf.setdefault("spark.pyspark.driver.python", sys.executable)
        submit = self._provider_hook(conf=conf, name=self.app_name, **submit_options)
        if not self.spark_conn_id:
            submit._connection["master"] = LOCAL_MASTER  # its fallback for "no connection" is yarn
        return submit

    def _provider_hook(self, **options: Any) -> Any:
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        return SparkSubmitHook(conn_id=self.spark_conn_id or "", **options)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The connection as the apache-spark provider reads it: master, deploy_mode, queue, namespace, ..."""
        settings = dict(self._provider_hook()._connection)
        if not self.spark_conn_id:
            settings["master"] = LOCAL_MASTER
        return settings

    @cached_property
    def _connection_conf(self) -> dict[str, str]:
        if not self.spark_conn_id:
            return {}
        extra = self.get_connection(self.spark_conn_id).extra_dejson
        return {key: str(value) for key, value in extra.items() if key.startswith("spark.")}

    def master(self) -> str:
        """The master URL the connection names: ``spark://host:port``, ``yarn``, ``k8s://...`` or ``local[*]``."""
        return self.settings["master"]

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A SparkSession with the driver in this process, stopped when the block ends, whatever happens."""
        from pyspark import SparkConf
        from pyspark.sql import SparkSession

        settings = self.settings
        if settings["deploy_mode"] == "cluster":
            raise MlopsError(
                f"connection {self.spark_conn_id}: deploy-mode cluster runs the driver on the cluster; "
                "give the operator an application file instead of a transform"
            )
        conf = SparkConf().setAppName(self.app_name).setMaster(settings["master"])
        if settings["queue"]:
            conf.set("spark.yarn.queue", settings["queue"])
        if settings["namespace"]:
            conf.set("spark.kubernetes.namespace", settings["namespace"])
        conf.set("spark.ui.showConsoleProgress", "false")  # progress bars garble task logs
        conf.setAll(list({**self._connection_conf, **self.conf}.items()))
        spark = SparkSession.builder.config(conf=conf).getOrCreate()
        try:
            yield spark
        finally:
            spark.stop()

    def get_conn(self) -> Any:
        return self.submit_hook()
