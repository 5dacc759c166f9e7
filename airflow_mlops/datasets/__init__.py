"""Example data generators shipped with the provider (real data sets cannot be downloaded here)."""

from __future__ import annotations

from datetime import date

#: The day whose data a run works on, as an Airflow template: the run's logical date, or the day it ran
#: for runs that have none (API or Asset triggers).
DATA_DATE_TEMPLATE = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


def dated_seed(seed: int, data_date: str | date) -> int:
    """A generator seed for one day's data: each date its own data, the same data again for the same date."""
    day = data_date if isinstance(data_date, date) else date.fromisoformat(data_date)
    return seed * 1_000_003 + day.toordinal()
