"""airflow-mlops: reproducible, traceable ML retraining as an Apache Airflow provider."""

__version__ = "0.1.0"
