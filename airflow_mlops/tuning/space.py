"""Search spaces declared as data in a DAG, checked whole before any trial runs.

    {"alpha": {"type": "float", "low": 1e-4, "high": 1.0, "log": true},
     "max_depth": {"type": "int", "low": 2, "high": 12},
     "criterion": {"type": "categorical", "choices": ["gini", "entropy"]}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_mlops.errors import InputError

_NUMERIC_KEYS = {"type", "low", "high", "log", "step"}


class SearchSpaceError(InputError):
    """The search space cannot be sampled as declared."""


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # float, int, categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _dimension(name: str, spec: Any) -> tuple[Dimension | None, list[str]]:
    if not isinstance(spec, dict):
        return None, [f"{name}: expected a mapping with a 'type', got {spec!r}"]
    kind = spec.get("type")
    if kind == "categorical":
        unknown = set(spec) - {"type", "choices"}
        choices = spec.get("choices")
        problems = [f"{name}: unknown keys {sorted(unknown)}"] if unknown else []
        if not isinstance(choices, list) or not choices:
            problems.append(f"{name}: categorical needs a non-empty 'choices' list")
        elif not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            problems.append(f"{name}: choices must be strings, numbers, booleans or null")
        return (None if problems else Dimension(name, kind, choices=tuple(choices))), problems
    if kind not in ("float", "int"):
        return None, [f"{name}: type must be float, int or categorical, got {kind!r}"]
    integer = kind == "int"
    problems = [f"{name}: unknown keys {sorted(set(spec) - _NUMERIC_KEYS)}"] if set(spec) - _NUMERIC_KEYS else []
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    if not (_is_number(low, integer) and _is_number(high, integer)):
        problems.append(f"{name}: {kind} needs numeric 'low' and 'high'" + (" (integers)" if integer else ""))
    elif low > high:
        problems.append(f"{name}: low {low} is above high {high}")
    elif log and low <= 0:
        problems.append(f"{name}: log scale needs low > 0, got {low}")
    if not isinstance(log, bool):
        problems.append(f"{name}: 'log' must be true or false")
    if step is not None and (not _is_number(step, integer) or step <= 0):
        problems.append(f"{name}: 'step' must be a positive {kind}")
    if log and step is not None:
        problems.append(f"{name}: 'log' and 'step' cannot be combined")
    if problems:
        return None, problems
    return Dimension(name, kind, low, high, log, step), []


def parse_search_space(space: dict[str, Any] | str, allowed_names: Iterable[str] | None = None) -> list[Dimension]:
    """Dimensions of a search space (a mapping, or its JSON text); every problem in one error.

    ``allowed_names`` (an estimator's parameter names) catches typos before a study is created.
    """
    if isinstance(space, str):
        try:
            space = json.loads(space)
        except json.JSONDecodeError as error:
            raise SearchSpaceError(f"search space is not valid JSON: {error}") from None
    if not isinstance(space, dict) or not space:
        raise SearchSpaceError("search space must be a non-empty mapping of parameter names to specs")
    dimensions, problems = [], []
    allowed = set(allowed_names) if allowed_names is not None else None
    for name, spec in space.items():
        if allowed is not None and name not in allowed:
            problems.append(f"{name}: not a parameter of the estimator")
            continue
        dimension, found = _dimension(name, spec)
        problems.extend(found)
        if dimension is not None:
            dimensions.append(dimension)
    if problems:
        raise SearchSpaceError("invalid search space: " + "; ".join(problems))
    return dimensions
