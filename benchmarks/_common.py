"""Helpers the benchmarks share: timing, and running an operator's execute as one task instance."""

from __future__ import annotations

import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any


def timed(action) -> float:
    """Seconds ``action()`` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def execute_as_task(operator_class: Any, dag_id: str, run_id: str, **arguments: Any) -> Any:
    """``execute`` of an operator in a DAG, with the task-instance context its execute reads.

    Each distinct ``run_id`` is a new task instance, so retry logic never returns an earlier result.
    """
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None) as dag:
        operator = operator_class(**arguments)
    ti = SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id=operator.task_id, map_index=-1, try_number=1,
                         xcom_push=lambda key, value: None)
    return operator.execute({"ti": ti, "dag": dag, "logical_date": None, "outlet_events": defaultdict(SimpleNamespace)})
