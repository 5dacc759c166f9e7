"""Values of templated operator arguments: given as they are, or as the text a template rendered them into.

``{{ params.n }}`` renders ``"5"``, ``{{ params.x | tojson }}`` renders JSON text, ``{{ params.dry }}``
renders ``"True"``; each function takes either form and names the argument in its error.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_mlops.errors import InputError


def as_mapping(value: Any, name: str) -> dict[str, Any]:
    """A dict given as is, or as JSON text; ``{}`` for None or empty text."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise InputError(f"{name} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InputError(f"{name} must be a mapping of names to values, got {type(value).__name__}")
    return dict(value)


def as_flag(value: Any, name: str) -> bool:
    """A bool given as is, or as text ``true``/``false`` in any case (``True`` is what a template renders)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise InputError(f"{name} must be true or false, got {value!r}")
    return text == "true"


def as_int(value: Any, name: str) -> int:
    """A whole number given as a number or its text; never a bool."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise InputError(f"{name} must be a whole number, got {value!r}")


def as_float(value: Any, name: str) -> float:
    """A number given as a number or its text; never a bool."""
    if not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise InputError(f"{name} must be a number, got {value!r}")
