"""Operators: thin adapters from Airflow's task world onto airflow_mlops' core modules."""

from airflow_mlops.operators.snapshot import DataSnapshotOperator

__all__ = ["DataSnapshotOperator"]
