"""MLflow's one warning our runs cannot avoid, hidden where we call MLflow, and nowhere else.

MLflow hints on every schema it infers that holds an integer column ("Integer columns in Python cannot
represent missing values"). The datasets a run logs and evaluates hold the label, an integer class for
a classifier that never has missing values; declaring it float would misstate the data. So the hint
is filtered around those two calls only, leaving every other warning, ours or MLflow's, as it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

INTEGER_SCHEMA_HINT = r"Hint: Inferred schema contains integer column"


@contextmanager
def integer_schema_hint_hidden() -> Iterator[None]:
    """Inside: MLflow's integer-schema hint is not shown; outside: the warning filters as they were."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=INTEGER_SCHEMA_HINT, category=UserWarning)
        yield
