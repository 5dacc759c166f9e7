"""Batch prediction: a registered model scores a data snapshot into a new, derived snapshot (no Airflow import)."""

from airflow_mlops.predict.batch import PredictInput, batch_predict
from airflow_mlops.predict.model import PredictError, ResolvedModel, resolve_model
from airflow_mlops.predict.signature import check_columns

__all__ = ["PredictError", "PredictInput", "ResolvedModel", "batch_predict", "check_columns", "resolve_model"]
