"""Third-party warnings our runs cannot avoid, hidden at the call that causes them, and nowhere else.

- MLflow hints on every schema it infers that holds an integer column ("Integer columns in Python
  cannot represent missing values"). The datasets a run logs and evaluates hold the label, an integer
  class for a classifier that never has missing values, and a model's signature records the training
  dtypes as they are; declaring them float would misstate the data.
- Importing skops walks ``sys.modules`` with ``getattr`` to place scipy's ufuncs (``skops.io._utils.
  whichmodule``); in an Airflow worker each of Airflow's deprecated-module shims then warns, over a
  thousand lines a task log. Only warnings raised from that walk are hidden, during that import.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

INTEGER_SCHEMA_HINT = r"Hint: Inferred schema contains integer column"


@contextmanager
def integer_schema_hint_hidden() -> Iterator[None]:
    """Inside: MLflow's integer-schema hint is not shown; outside: the warning filters as they were."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=INTEGER_SCHEMA_HINT, category=UserWarning)
        yield


def skops_io() -> ModuleType:
    """``skops.io``, imported (once per process) without the warnings its module walk draws from Airflow's shims.

    Call it before MLflow saves or loads a skops-serialised model, so MLflow finds skops already imported.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"skops\.io\._utils")
        import skops.io

    return skops.io
