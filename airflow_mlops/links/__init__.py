"""Operator extra links: from a task instance to what it produced (MLflow run, model version)."""
