"""Retention: restic-style keep rules that forget old snapshots, and never one a registered model needs.

Forgetting marks snapshots as forgotten (the store's ``forgotten/<id>`` markers); gc then has the store
delete forgotten snapshots and the objects no kept snapshot uses. Both first compute, through lineage,
what registered model versions need (:mod:`~airflow_mlops.retention.protection`); the keep rules
(:mod:`~airflow_mlops.retention.rules`) decide the rest. :func:`apply_retention` runs the sequence for
RetentionOperator and the CLI. Sits above snapshots and lineage; no Airflow import.
"""

from airflow_mlops.retention.apply import RetentionReport, apply_retention
from airflow_mlops.retention.protection import protected_snapshots
from airflow_mlops.retention.rules import Decision, KeepRules, group_of, plan, render
from airflow_mlops.retention.staging import STAGING_MAX_AGE_SECONDS, remove_stale_staging, stale_staging

__all__ = [
    "STAGING_MAX_AGE_SECONDS",
    "Decision",
    "KeepRules",
    "RetentionReport",
    "apply_retention",
    "group_of",
    "plan",
    "protected_snapshots",
    "remove_stale_staging",
    "render",
    "stale_staging",
]
