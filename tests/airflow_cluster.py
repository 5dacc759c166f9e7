"""A real Airflow for tests: api-server, scheduler and dag-processor on loopback, LocalExecutor (or
the CeleryExecutor with workers on Redis), metadata DB on a fresh PostgreSQL database, DAG files
from a test folder.

Tests drive it as users do: through the REST API (trigger with conf, create a backfill, read task
instances and extra links) and by killing task processes. Every process it started, task processes
included (they run in process groups of their own), is stopped at the end, whatever happens; the
database is dropped with the test session's other PostgreSQL databases. Import the fixture into a
test module: ``from tests.airflow_cluster import airflow_cluster``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, VENV_BIN, free_port, require_service

TERMINAL_RUN_STATES = ("success", "failed")
_INHERITED_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "MLFLOW_TRACKING_", "AIRFLOW_MLOPS_")


class AirflowCluster:
    """Airflow's three long-running processes with the configuration they share (see shared notes)."""

    def __init__(self, root: Path, dags_folder: Path, database_url: str, parallelism: int = 6,
                 celery_workers: int = 0, services_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.celery_workers = celery_workers
        self.home = root / "airflow_home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "PYTHONPATH": str(REPO),  # task code may import test helpers (``tests.*``)
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if celery_workers else "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "bundles"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        })
        if celery_workers:  # Redis as the broker; a queue of this cluster's own, results in its metadata DB
            env.update({
                "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"airflow-mlops-tests-{self.port}",
            })
        env.update(services_env or {})  # connections to shared services, as a deployment sets them
        self.env = env

    # ----------------------------------------------------------------- life cycle

    def start(self, timeout: float = 240) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=self.env, cwd=self.root,
                                 capture_output=True, text=True, timeout=600)
        assert migrate.returncode == 0, f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}"
        commands = {name: [name] for name in ("api-server", "scheduler", "dag-processor")}
        for number in range(1, self.celery_workers + 1):
            commands[f"celery-worker-{number}"] = [
                "celery", "worker", "--celery-hostname", f"worker{number}@%h", "--concurrency", "3",
                "--queues", self.env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"], "--skip-serve-logs",
            ]
        for name, command in commands.items():
            log = open(self.root / "logs" / f"{name}.log", "w")
            self.processes[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *command], env=self.env, cwd=self.root,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, process in self.processes.items() if process.poll() is not None]
            assert not dead, f"{dead} exited at start:\n{self.service_logs()}"
            health = self._get_or_none("/api/v2/monitor/health")
            if health and all((health.get(part) or {}).get("status") == "healthy"
                              for part in ("metadatabase", "scheduler", "dag_processor")):
                return
            time.sleep(1)
        raise AssertionError(f"Airflow did not become healthy in {timeout}s:\n{self.service_logs()}")

    def stop(self) -> None:
        """Stop the services and every process they started (task processes have their own groups)."""
        import psutil

        descendants = []
        for process in self.processes.values():
            try:
                descendants += psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for child in descendants:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(descendants, timeout=10)

    def service_logs(self, lines: int = 40) -> str:
        parts = []
        for name in self.processes:
            text = (self.root / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name} (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    # ----------------------------------------------------------------- the embedded stores its tasks used

    def mlflow_client(self):
        """A client of the embedded MLflow store under the cluster's AIRFLOW_HOME."""
        import mlflow

        return mlflow.MlflowClient(f"sqlite:///{self.home / 'airflow_mlops' / 'mlflow.db'}")

    def snapshot_store(self):
        """The default snapshot store under the cluster's AIRFLOW_HOME."""
        from airflow_mlops.snapshots import SnapshotStore

        return SnapshotStore.open(str(self.home / "airflow_mlops" / "snapshots"))

    # ----------------------------------------------------------------- REST API

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON) of a REST API call; the all-admins auth manager needs no token."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Content-Type": "application/json"},
            data=json.dumps(body).encode() if body is not None else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def _get_or_none(self, path: str) -> Any:
        try:
            status, body = self.api("GET", path)
        except (OSError, ValueError):
            return None
        return body if status == 200 else None

    def wait_for_dags(self, *dag_ids: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed the DAGs into the database."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while missing and time.monotonic() < deadline:
            missing = [dag_id for dag_id in missing if self._get_or_none(f"/api/v2/dags/{dag_id}") is None]
            time.sleep(1)
        if missing:
            errors = self.api("GET", "/api/v2/importErrors")[1]
            raise AssertionError(f"DAGs {missing} not parsed in {timeout}s; import errors: {errors}\n{self.service_logs()}")

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        """Trigger a DAG run as the UI's trigger form does; returns its run id."""
        status, body = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                                {"logical_date": logical_date, "conf": conf or {}})
        assert status == 200, f"trigger {dag_id}: HTTP {status} {body}"
        return body["dag_run_id"]

    def backfill(self, dag_id: str, from_date: str, to_date: str, max_active_runs: int, **options: Any) -> dict:
        status, body = self.api("POST", "/api/v2/backfills", {
            "dag_id": dag_id, "from_date": from_date, "to_date": to_date,
            "max_active_runs": max_active_runs, **options,
        })
        assert status == 200, f"backfill {dag_id}: HTTP {status} {body}"
        return body

    def extra_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """The task instance's extra links by name, as the UI reads them."""
        status, body = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")
        assert status == 200, body
        return body["extra_links"]

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")[1]["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")[1]["task_instances"]

    def wait_for_runs(self, dag_id: str, run_ids: list[str], timeout: float = 600, expect: str = "success") -> list[dict]:
        """Wait until every run is finished; assert each ended ``expect``, with task logs if not."""
        deadline = time.monotonic() + timeout
        while True:
            runs = {run["dag_run_id"]: run for run in self.dag_runs(dag_id) if run["dag_run_id"] in run_ids}
            if len(runs) == len(run_ids) and all(run["state"] in TERMINAL_RUN_STATES for run in runs.values()):
                break
            if time.monotonic() > deadline:
                states = {run_id: runs[run_id]["state"] if run_id in runs else "?" for run_id in run_ids}
                raise AssertionError(f"{dag_id} runs not finished in {timeout}s: {states}\n"
                                     + "\n".join(self.failure_report(dag_id, r) for r in runs))
            time.sleep(2)
        wrong = [run_id for run_id, run in runs.items() if run["state"] != expect]
        assert not wrong, "\n".join(self.failure_report(dag_id, run_id) for run_id in wrong)
        return [runs[run_id] for run_id in run_ids]

    # ----------------------------------------------------------------- task logs

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        path = (self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
                / f"attempt={try_number}.log")
        return path.read_text(errors="replace") if path.exists() else f"(no log at {path})"

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """Every attempt's log of the run's task instances that failed or needed a retry."""
        parts = [f"=== {dag_id} / {run_id}"]
        for ti in self.task_instances(dag_id, run_id):
            parts.append(f"{ti['task_id']}: {ti['state']} (try {ti['try_number']})")
            if ti["state"] not in ("success", "skipped") or ti["try_number"] > 1:
                for attempt in range(1, ti["try_number"] + 1):
                    log = self.task_log(dag_id, run_id, ti["task_id"], attempt)
                    parts.append(f"--- {ti['task_id']} attempt {attempt}\n{log[-6000:]}")
        return "\n".join(parts)


def _redis_is_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def airflow_cluster(request, postgres_databases, tmp_path_factory):
    """Airflow running for real on the test module's ``DAG_FILES``; one per module (start-up is slow).

    A module setting ``CELERY_WORKERS = N`` gets the CeleryExecutor with N workers (Redis broker); one
    setting ``SERVICES_FIXTURE = "name"`` gets that fixture's dict added to every process's environment
    (``AIRFLOW_CONN_*`` of the MLflow server, study database, Spark cluster and S3 it started).
    """
    root = tmp_path_factory.mktemp("airflow_cluster")
    dags_folder = root / "dags"  # the module's DAG_FILES, linked into one folder
    dags_folder.mkdir()
    for dag_file in request.module.DAG_FILES:
        (dags_folder / Path(dag_file).name).symlink_to(dag_file)
    celery_workers = getattr(request.module, "CELERY_WORKERS", 0)
    if celery_workers:
        require_service(_redis_is_up(), "Redis on 127.0.0.1:6379 (the Celery broker) is not reachable")
    services = getattr(request.module, "SERVICES_FIXTURE", None)
    cluster = AirflowCluster(root, dags_folder, postgres_databases("airflow"), celery_workers=celery_workers,
                             services_env=request.getfixturevalue(services) if services else None)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
