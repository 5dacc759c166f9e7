"""SparkHook: an Airflow ``spark`` connection turned into a SparkSession or a spark-submit run."""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook

from airflow_mlops.errors import MlopsError
from airflow_mlops.hooks.base import optional_connection
from airflow_mlops.utils.extras import require_extra

LOCAL_MASTER = "local[*]"
#: Connection extra: the standalone master's web UI (``http://master:8080``), where applications keep a page.
MASTER_WEB_UI = "master-web-ui"
_APP_ID_LINE = re.compile(r"Connected to Spark cluster with app ID (\S+)")  # StandaloneSchedulerBackend, INFO
_PROPERTY_ESCAPES = str.maketrans({
    "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f", "=": "\\=", ":": "\\:", "#": "\\#", "!": "\\!", " ": "\\ ",
})


@dataclass(frozen=True)
class SparkApplication:
    """A Spark application that has started: its id, its master, and where to see it.

    ``driver_ui`` is the driver's web UI, served only while the application runs (None when not
    known); ``master_page`` is its page on the standalone master's web UI, kept after it ends (None
    unless the connection names that UI in its ``master-web-ui`` extra).
    """

    app_id: str
    master: str
    driver_ui: str | None
    master_page: str | None


class SparkHook(BaseHook):
    """Spark on the master an Airflow Spark connection names (standalone, YARN, Kubernetes), ``local[*]`` without one.

    The connection is the apache-spark provider's ``spark`` type, parsed by its ``SparkSubmitHook``
    (host with scheme, port, extras ``deploy-mode``, ``queue``, ``namespace``); its extras whose names
    start with ``spark.`` become Spark conf, and ``conf`` given here overrides them. The extra
    ``master-web-ui`` names a standalone master's web UI, to link each application's page there.

    Spark conf never goes on a command line, which ``ps`` shows every local user: spark-submit (the
    one pyspark starts for a session too) reads it from a properties file only this user can read,
    in a private temporary folder removed once it is read (a session) or spark-submit ended, in every
    case; ``spark-defaults.conf`` is still read under it. Conf values are never logged.

    :param spark_conn_id: Airflow Spark connection; ``None``, or ``spark_default`` when it is not configured,
        runs on ``local[*]`` in the task process.
    :param conf: Spark properties for this job.
    :param app_name: the application name shown by the cluster manager.
    :param on_start: called with the :class:`SparkApplication` as soon as Spark names it.
    """

    conn_name_attr = "spark_conn_id"
    default_conn_name = "spark_default"
    hook_name = "Spark (airflow-mlops)"

    def __init__(
        self,
        spark_conn_id: str | None = default_conn_name,
        conf: dict[str, Any] | None = None,
        app_name: str = "airflow-mlops",
        on_start: Callable[[SparkApplication], None] | None = None,
    ) -> None:
        super().__init__()
        # None runs on local[*]; an unknown id other than the default fails here, where the
        # provider's hook would silently fall back to yarn.
        connection = optional_connection(self, spark_conn_id)
        self.spark_conn_id = spark_conn_id if connection else None
        self._extra = connection.extra_dejson if connection else {}
        self.conf = {key: str(value) for key, value in (conf or {}).items()}
        self.app_name = app_name
        self.on_start = on_start
        self._session: Any = None
        self._submit: Any = None

    def _provider_hook(self, **options: Any) -> Any:
        require_extra("spark", f"the Spark connection {self.spark_conn_id or '(local[*])'}")
        return _submit_hook_class()(conn_id=self.spark_conn_id or "", **options)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The connection as the apache-spark provider reads it: master, deploy_mode, queue, namespace, ..."""
        return dict(self._provider_hook()._connection)

    @cached_property
    def spark_conf(self) -> dict[str, str]:
        """The connection's ``spark.*`` extras, overridden by ``conf``."""
        extras = {key: str(value) for key, value in self._extra.items() if key.startswith("spark.")}
        return {**extras, **self.conf}

    def master(self) -> str:
        """The master URL the connection names: ``spark://host:port``, ``yarn``, ``k8s://...`` or ``local[*]``."""
        return self.settings["master"]

    def submit(self, application: str, arguments: list[str]) -> None:
        """Run ``application`` (a PySpark file or jar) through spark-submit with ``arguments``; raises when it fails.

        A driver in client mode runs this process's Python, so it imports what the task can.
        """
        conf = dict(self.spark_conf)
        if self.settings["deploy_mode"] != "cluster":
            conf.setdefault("spark.pyspark.driver.python", sys.executable)
        self._submit = self._provider_hook(conf=conf, name=self.app_name, application_args=arguments,
                                           on_app_id=self._started)
        try:
            self._submit.submit(application)
        finally:
            self._submit = None

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A SparkSession with the driver in this process, stopped when the block ends, whatever happens.

        On a local master its Python workers run this interpreter (see ``_local_python_workers``).
        """
        require_extra("spark", "a Spark session")
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        settings = self.settings
        if settings["deploy_mode"] == "cluster":
            raise MlopsError(
                f"connection {self.spark_conn_id}: deploy-mode cluster runs the driver on the cluster; "
                "give the operator an application file instead of a transform"
            )
        conf = {"spark.master": settings["master"], "spark.app.name": self.app_name,
                "spark.ui.showConsoleProgress": "false"}  # progress bars garble task logs
        if settings["queue"]:
            conf["spark.yarn.queue"] = settings["queue"]
        if settings["namespace"]:
            conf["spark.kubernetes.namespace"] = settings["namespace"]
        conf.update(self.spark_conf)
        # pyspark would start its JVM with --conf arguments; the file it is told about instead is
        # read at start-up, so properties such as spark.driver.memory still apply.
        with _local_python_workers(conf["spark.master"]):
            with private_properties(conf) as properties, _pyspark_submit_args(properties):
                SparkContext._ensure_initialized()  # starts the JVM, unless this process runs one already
            # Given again through py4j, which reaches a JVM this process had started before, too.
            spark = SparkSession.builder.config(map=conf).getOrCreate()
            self._session = spark
            try:
                self._started(spark.sparkContext.applicationId, spark.sparkContext.uiWebUrl)
                yield spark
            finally:
                self._session = None
                spark.stop()

    def _started(self, app_id: str, driver_ui: str | None = None) -> None:
        if self.on_start is None:
            return
        web_ui = self._extra.get(MASTER_WEB_UI)
        standalone = web_ui and self.master().startswith("spark://")
        page = f"{str(web_ui).rstrip('/')}/app/?appId={quote(app_id)}" if standalone else None
        self.on_start(SparkApplication(app_id, self.master(), driver_ui, page))

    def cancel(self) -> None:
        """Cancel the running jobs of ``session``, or kill the spark-submit of ``submit``.

        Airflow calls this (through ``on_kill``) from a signal handler, on the thread that is blocked
        in a py4j call to Spark; a call on that thread's connection would be re-entrant, so a thread
        of its own (which py4j gives a connection of its own) cancels the jobs.
        """
        session, submit = self._session, self._submit
        if session is not None:
            canceller = threading.Thread(target=session.sparkContext.cancelAllJobs, name="spark-cancel")
            canceller.start()
            canceller.join(timeout=60)
        if submit is not None:
            submit.on_kill()


@contextmanager
def private_properties(conf: Mapping[str, str]) -> Iterator[Path]:
    """``conf`` as a Java properties file only this user can read, in a private folder removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="airflow-mlops-spark-") as folder:  # mode 0700
        path = Path(folder, "spark.properties")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as file:
            file.writelines(
                f"{key.translate(_PROPERTY_ESCAPES)}={value.translate(_PROPERTY_ESCAPES)}\n" for key, value in conf.items()
            )
        yield path


def _spark_submit_options(properties: Path) -> list[str]:
    """spark-submit options reading conf from ``properties``; without the flag it would skip spark-defaults.conf."""
    return ["--properties-file", str(properties), "--load-spark-defaults"]


@contextmanager
def _local_python_workers(master: str) -> Iterator[None]:
    """On a local master, Python workers run this interpreter (PYSPARK_PYTHON, when unset) in the block.

    PySpark otherwise starts ``python3`` from the PATH, which may lack what the task imports (MLflow
    for ``spark_udf``, a transformation's UDFs). On a cluster, PYSPARK_PYTHON must name an
    interpreter with those packages on every executor, so it is left to the deployment.
    """
    if "PYSPARK_PYTHON" in os.environ or not master.startswith("local"):
        yield
        return
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        yield
    finally:
        os.environ.pop("PYSPARK_PYTHON", None)


@contextmanager
def _pyspark_submit_args(properties: Path) -> Iterator[None]:
    """PYSPARK_SUBMIT_ARGS (what pyspark passes the spark-submit starting its JVM) reading ``properties``, in the block."""
    previous = os.environ.get("PYSPARK_SUBMIT_ARGS")
    os.environ["PYSPARK_SUBMIT_ARGS"] = f"{shlex.join(_spark_submit_options(properties))} {previous or 'pyspark-shell'}"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["PYSPARK_SUBMIT_ARGS"]
        else:
            os.environ["PYSPARK_SUBMIT_ARGS"] = previous


@cache
def _submit_hook_class() -> type:
    """The provider's ``SparkSubmitHook``, with every ``--conf`` moved off the command line into a private properties file.

    It also runs ``local[*]`` without a connection (the provider falls back to yarn), and says the
    application id when spark-submit logs it.
    """
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    class PrivateConfSubmitHook(SparkSubmitHook):
        def __init__(self, *, on_app_id: Callable[[str], None] | None = None, **options: Any) -> None:
            self._on_app_id = on_app_id
            self._cleanup = ExitStack()
            super().__init__(**options)

        def _resolve_connection(self) -> dict[str, Any]:
            connection = super()._resolve_connection()
            if not self._conn_id:
                connection["master"] = LOCAL_MASTER
            return connection

        def submit(self, application: str = "", **kwargs: Any) -> Any:
            with self._cleanup:
                return super().submit(application, **kwargs)

        def _build_spark_common_args(self) -> list[str]:
            command, conf, arguments = [], {}, iter(super()._build_spark_common_args())
            for argument in arguments:
                if argument == "--conf":  # followed by key=value; the last value of a key wins, as in spark-submit
                    key, _, value = next(arguments).partition("=")
                    conf[key] = value
                else:
                    command.append(argument)
            return [*command, *_spark_submit_options(self._cleanup.enter_context(private_properties(conf)))]

        def _process_spark_submit_log(self, itr: Iterator[Any]) -> None:
            super()._process_spark_submit_log(self._noting_app_id(itr))

        def _noting_app_id(self, lines: Iterator[str]) -> Iterator[str]:
            for line in lines:
                match = _APP_ID_LINE.search(line)
                if match and self._on_app_id is not None:
                    self._on_app_id(match.group(1))
                yield line

    return PrivateConfSubmitHook
