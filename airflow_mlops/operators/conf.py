"""CheckConfOperator: a DAG run's conf may only name the DAG's Params."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from airflow_mlops.operators._input import InputFailure


class CheckConfOperator(BaseOperator):
    """Fail the DAG run at once (no retry) when its conf holds a key the DAG declares no Param for.

    Airflow checks the values of declared Params when a run is triggered, but lets unknown keys through:
    a misspelt ``{"rowz": 3000}`` would run on the defaults, and its model could become champion. Put this
    task upstream of the first task that does work. It needs no arguments.
    """

    ui_color = "#f0f0f0"

    def execute(self, context: Any) -> list[str]:
        dag = context["dag"]
        known = sorted(dag.params)
        unknown = sorted(set((context["dag_run"].conf or {})) - set(known))
        if unknown:
            raise InputFailure(
                f"conf key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                f"{'are' if len(unknown) > 1 else 'is'} not a param of {dag.dag_id}; its params: {', '.join(known)}"
            )
        self.log.info("conf names only params of %s", dag.dag_id)
        return known
