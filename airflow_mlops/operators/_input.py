"""Inputs that cannot work fail their task once: retrying the same bad argument or table cannot help."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.errors import InputError

Execute = TypeVar("Execute", bound=Callable[..., Any])


class InputFailure(AirflowFailException, InputError):
    """What Airflow sees of an :class:`InputError` raised in a task: a failure not to retry (still an InputError)."""


def bad_input_fails_at_once(execute: Execute) -> Execute:
    """Wrap an operator's ``execute``: an :class:`InputError` becomes :class:`InputFailure` (no retry),
    with the same one-line message; any other error (a server away, a killed worker) still retries."""

    @functools.wraps(execute)
    def checked(self: Any, context: Any) -> Any:
        try:
            return execute(self, context)
        except InputError as error:
            raise InputFailure(str(error)) from None

    return checked  # type: ignore[return-value]
