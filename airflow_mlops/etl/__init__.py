"""Spark ETL core: data snapshots in, a derived snapshot out (no Airflow import)."""
