"""One attempt of an airflow_mlops operator's task, in a process of its own as on an Airflow worker.

    python -m tests.task_process CONFIG.json

The config names the task instance (dag_id, run_id, task_id, try_number, logical_date), the operator class
(default MlflowTrainOperator) and its arguments, and an output file for the result, the XComs pushed and the asset events. ``die_before_xcom_push`` kills the process
with SIGKILL after ``execute`` returns: a worker that died after logging, before Airflow stored XCom.
SIGTERM calls the operator's ``on_kill``, as Airflow's task runner does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def run_task(operator_class, *, dag_id: str, run_id: str, try_number: int = 1, logical_date: str | None = None,
             dag_file: str | None = None, on_sigterm_kill: bool = False, **arguments) -> dict:
    """``execute`` of an operator as one attempt of a task instance, with the context Airflow gives it.

    Returns the result, the XComs pushed and the asset events. Each distinct ``run_id`` is a new task
    instance, so retry logic never returns an earlier result.
    """
    from datetime import datetime

    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None) as dag:
        operator = operator_class(**arguments)
    dag.fileloc = dag_file
    if on_sigterm_kill:
        signal.signal(signal.SIGTERM, lambda *_: operator.on_kill())  # as Airflow's task runner does on SIGTERM
    pushed: dict = {}
    ti = SimpleNamespace(
        dag_id=dag_id, run_id=run_id, task_id=operator.task_id, map_index=-1, try_number=try_number,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )
    outlet_events: dict = defaultdict(SimpleNamespace)
    context = {"ti": ti, "dag": dag, "outlet_events": outlet_events,
               "logical_date": datetime.fromisoformat(logical_date) if logical_date else None}
    result = operator.execute(context)
    return {"result": result, "xcom": pushed, "asset_events": {asset.uri: event.extra for asset, event in outlet_events.items()}}


def run_attempt(config: dict) -> dict:
    from airflow_mlops import operators

    return run_task(
        getattr(operators, config.get("operator_class", "MlflowTrainOperator")), dag_id=config["dag_id"],
        run_id=config["run_id"], task_id=config["task_id"], try_number=config["try_number"],
        logical_date=config.get("logical_date"), dag_file=config.get("dag_file"), on_sigterm_kill=True,
        **config["operator"],
    )


def attempt_config(tmp_path, snapshot_uri, try_number, **operator) -> dict:
    """An attempt of task ``train`` in dag ``retrain``, in an experiment named after the test's tmp_path."""
    return {
        "dag_id": "retrain", "run_id": "scheduled__2026-01-01T00:00:00+00:00", "task_id": "train",
        "try_number": try_number, "logical_date": "2026-01-01T00:00:00+00:00",
        "output": str(tmp_path / f"attempt-{try_number}.json"),
        "operator": {"input_snapshot": snapshot_uri, "target": "label", "experiment_name": tmp_path.name, **operator},
    }


def run_in_process(config: dict, env: dict | None = None) -> subprocess.Popen:
    """Start one attempt in its own process (output and log beside ``config['output']``)."""
    path = Path(config["output"]).with_suffix(".config.json")
    path.write_text(json.dumps(config))
    log = open(Path(config["output"]).with_suffix(".log"), "w")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.task_process", str(path)], cwd=REPO, env=env or os.environ.copy(),
        stdout=log, stderr=subprocess.STDOUT,
    )


def runs_of(client, experiment_name):
    """Every run of the experiment, nested and deleted ones included."""
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id], run_view_type=3) if experiment else []


if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    outcome = run_attempt(config)
    if config.get("die_before_xcom_push"):
        os.kill(os.getpid(), signal.SIGKILL)
    Path(config["output"]).write_text(json.dumps(outcome))
