"""The model registry: idempotent registration, the champion/challenger gate, promotion history, rollback.

Plain Python over an ``MlflowClient`` (no Airflow import): the operator and the CLI drive the same calls.
"""
