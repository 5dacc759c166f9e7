"""The one translation of an Airflow task context into the plain identity our records carry."""

from __future__ import annotations

from typing import Any


def task_identity(context: Any) -> dict[str, Any]:
    """dag_id, run_id, task_id, map_index, try_number and logical_date of the running task instance.

    These name one attempt of one task instance: enough to find it in the Airflow UI months later.
    """
    ti = context["ti"]
    logical_date = context.get("logical_date")
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
        "logical_date": logical_date.isoformat() if logical_date is not None else None,
    }


def task_instance_url(context: Any) -> str | None:
    """The Airflow UI page of the running task instance (its try), as Airflow itself links it (``ti.log_url``)."""
    return getattr(context.get("ti"), "log_url", None)


def made_by_note(identity: dict[str, Any], url: str | None) -> str | None:
    """One markdown line linking a record (an MLflow run, a model version) to the task instance that made it."""
    if not url:
        return None
    mapped = f"[{identity['map_index']}]" if identity.get("map_index") not in (None, -1) else ""
    return (f"Made by Airflow task instance [{identity['dag_id']} / {identity['run_id']} / "
            f"{identity['task_id']}{mapped}, try {identity['try_number']}]({url}).")
