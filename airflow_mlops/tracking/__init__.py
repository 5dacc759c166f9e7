"""Tracked training core: run identity, retries, environment and code capture, data, evaluation.

No Airflow import: operators pass plain identities and values in.
"""
