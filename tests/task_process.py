"""One attempt of an MLflowTrainOperator task, in a process of its own as on an Airflow worker.

    python -m tests.task_process CONFIG.json

The config names the task instance (dag_id, run_id, task_id, try_number), the operator's arguments
and an output file for the result and the XComs pushed. ``die_before_xcom_push`` kills the process
with SIGKILL after ``execute`` returns: a worker that died after logging, before Airflow stored XCom.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace


def run_attempt(config: dict) -> dict:
    from airflow.sdk import DAG

    from airflow_mlops.operators import MLflowTrainOperator

    with DAG(config["dag_id"], schedule=None) as dag:
        operator = MLflowTrainOperator(task_id=config["task_id"], **config["operator"])
    dag.fileloc = config.get("dag_file")
    pushed: dict = {}
    ti = SimpleNamespace(
        dag_id=config["dag_id"], run_id=config["run_id"], task_id=config["task_id"], map_index=-1,
        try_number=config["try_number"], xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )
    result = operator.execute({"ti": ti, "dag": dag, "logical_date": None})
    return {"result": result, "xcom": pushed}


if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    outcome = run_attempt(config)
    if config.get("die_before_xcom_push"):
        os.kill(os.getpid(), signal.SIGKILL)
    Path(config["output"]).write_text(json.dumps(outcome))
