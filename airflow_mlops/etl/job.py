"""A Spark ETL job in either of its forms, run to a derived snapshot (no Airflow import).

A transformation runs in a Spark session whose driver is this process; an application file runs
through spark-submit, told where its inputs are and where to write. Either way the output becomes a
snapshot through :func:`~airflow_mlops.etl.spark.derive_snapshot`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from airflow_mlops.etl.spark import EtlError, EtlInput, code_identity, derive_snapshot, spark_transform
from airflow_mlops.snapshots import SnapshotRecord, SnapshotStore
from airflow_mlops.utils.imports import import_object


class SparkRunner(Protocol):
    """Where Spark runs; ``airflow_mlops.hooks.spark.SparkHook`` is one, for an Airflow Spark connection."""

    def master(self) -> str: ...

    def session(self) -> AbstractContextManager[Any]: ...

    def submit(self, application: str, arguments: list[str]) -> None: ...


@dataclass
class SparkJob:
    """What derives the output: ``transform`` in a Spark session, or ``application`` through spark-submit.

    :param transform: callable or dotted path ``transform(spark, inputs, **transform_kwargs)`` taking
        ``{name: DataFrame}`` and returning a DataFrame, or ``{name: DataFrame}`` (a folder each).
    :param application: a PySpark file (or jar); it gets ``application_args``, then ``--output DIR``
        and ``--input NAME=PATH`` per input, and must write Parquet under DIR.
    :param partitions: Parquet files per table a transform outputs.
    :param sort_by: columns fixing a transform's row order; default every sortable column.
    """

    transform: Callable[..., Any] | str | None = None
    application: str | os.PathLike | None = None
    transform_kwargs: Mapping[str, Any] | None = None
    application_args: Sequence[str] = ()
    partitions: int = 1
    sort_by: list[str] | None = None

    def __post_init__(self) -> None:
        """Refuse a malformed job before any data is restored or Spark is started; import a dotted ``transform``."""
        if (self.transform is None) == (self.application is None):
            raise EtlError("give either transform (a callable or dotted path) or application (a file for spark-submit)")
        if self.application is not None and not Path(self.application).is_file():
            raise EtlError(f"application {self.application} does not exist")
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int) or self.partitions < 1:
            raise EtlError(f"output partitions must be a positive integer, got {self.partitions!r}")
        try:
            json.dumps(dict(self.transform_kwargs or {}))
        except TypeError as error:
            raise EtlError(f"transform_kwargs must be JSON values, to be recorded with the snapshot: {error}") from None
        if isinstance(self.transform, str):
            self.transform = import_object(self.transform)

    def settings(self) -> dict[str, Any]:
        """What the snapshot record keeps besides the code, to re-run the job (``airflow-mlops reproduce``)."""
        return {"transform_kwargs": dict(self.transform_kwargs or {}), "application_args": list(self.application_args),
                "partitions": self.partitions, "sort_by": self.sort_by}

    def run(
        self,
        runner: SparkRunner,
        store: SnapshotStore,
        inputs: list[EtlInput],
        *,
        staging_root: str | os.PathLike,
        airflow: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[SnapshotRecord, dict[str, dict[str, Any]]]:
        """Derive a snapshot of ``inputs`` in ``store``; its record's ``spark`` names the master and the
        application, ``job`` the settings, and ``extra`` is added to it.

        Returns the record and its tables, as :func:`~airflow_mlops.etl.spark.derive_snapshot` does.
        """
        code = code_identity(self.application or self.transform)
        derive = partial(derive_snapshot, store, inputs, staging_root=staging_root, code=code, airflow=airflow)
        recorded = {**dict(extra or {}), "job": self.settings()}
        if self.application is not None:
            spark_info = {"master": runner.master(), "application": str(self.application)}
            return derive(partial(self._submit, runner, inputs), extra={**recorded, "spark": spark_info})
        with runner.session() as spark:
            spark_info = {"master": spark.sparkContext.master, "application_id": spark.sparkContext.applicationId}
            write = spark_transform(spark, inputs, self.transform, partitions=self.partitions, sort_by=self.sort_by,
                                    transform_kwargs=self.transform_kwargs)
            return derive(write, extra={**recorded, "spark": spark_info})

    def _submit(self, runner: SparkRunner, inputs: list[EtlInput], output: Path) -> None:
        """Run the application, telling it the inputs and the output folder."""
        arguments = [*self.application_args, "--output", str(output)]
        for item in inputs:
            arguments += ["--input", f"{item.name}={item.path}"]
        runner.submit(str(self.application), arguments)
