"""Lineage core (no Airflow import): how records name datasets, and walks over snapshots, runs and model versions."""
