"""Hyperparameter tuning core: search spaces as data, resumable studies (shared by several tasks when they
name one), nested MLflow runs per trial."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_mlops.errors import MlopsError


def best_of(results: Iterable[Mapping[str, Any] | None], direction: str) -> dict[str, Any]:
    """The tuning result (an OptunaTuneOperator's XCom) with the best ``best_value`` for ``direction``.

    For tuning tasks, mapped or not, that feed one training task: ``best_of(tune.output, "maximize")
    ["best_params"]``. Tasks sharing a study each return its best when they finished, so this is the
    study's best even if one stopped early (a ``timeout_seconds``); None (a task that returned nothing) is skipped.
    """
    if direction not in ("maximize", "minimize"):
        raise MlopsError(f"direction must be maximize or minimize, got {direction!r}")
    candidates = [dict(result) for result in results if result is not None]
    if not candidates:
        raise MlopsError("no tuning result to choose the best of")
    choose = max if direction == "maximize" else min
    return choose(candidates, key=lambda result: float(result["best_value"]))
