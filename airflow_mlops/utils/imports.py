"""Turning a dotted path from a DAG (``package.module:name`` or ``package.module.name``) into the object, and back to its file."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from airflow_mlops.errors import InputError


def source_file(function: Any) -> str | None:
    """The file defining ``function``, or None (a builtin, a lambda typed at a prompt, no function)."""
    if function is None:
        return None
    try:
        return inspect.getsourcefile(function)
    except TypeError:
        return None


def import_object(path: str) -> Any:
    """The object a dotted path names; a one-line error saying what is missing otherwise."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise InputError(f"{path!r} is not an importable path (package.module:name)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"cannot import {module_name!r} for {path!r}: {error}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise InputError(f"module {module_name!r} has no {attribute!r}") from None
