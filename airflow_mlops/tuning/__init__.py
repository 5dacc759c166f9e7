"""Hyperparameter tuning core: search spaces as data, resumable studies, nested MLflow runs per trial."""
