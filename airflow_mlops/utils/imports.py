"""Turning a dotted path from a DAG (``package.module:name`` or ``package.module.name``) into the object."""

from __future__ import annotations

import importlib
from typing import Any

from airflow_mlops.errors import MlopsError


def import_object(path: str) -> Any:
    """The object a dotted path names; a one-line error saying what is missing otherwise."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise MlopsError(f"{path!r} is not an importable path (package.module:name)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise MlopsError(f"cannot import {module_name!r} for {path!r}: {error}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise MlopsError(f"module {module_name!r} has no {attribute!r}") from None
