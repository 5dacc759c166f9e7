"""Operators: thin adapters from Airflow's task world onto airflow_mlops' core modules."""

from airflow_mlops.operators.conf import CheckConfOperator
from airflow_mlops.operators.predict import BatchPredictOperator
from airflow_mlops.operators.registry import RegisterModelOperator
from airflow_mlops.operators.retention import RetentionOperator
from airflow_mlops.operators.snapshot import DataSnapshotOperator
from airflow_mlops.operators.spark_etl import SparkETLOperator
from airflow_mlops.operators.training import MlflowTrainOperator
from airflow_mlops.operators.tuning import OptunaTuneOperator

__all__ = ["BatchPredictOperator", "CheckConfOperator", "DataSnapshotOperator", "SparkETLOperator", "MlflowTrainOperator", "OptunaTuneOperator", "RegisterModelOperator",
           "RetentionOperator"]
