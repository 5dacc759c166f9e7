"""Re-running the Spark ETL job that derived a snapshot, on its parent snapshots, and comparing the output.

The snapshot's record names its inputs (snapshot ids and URIs), the transformation or application with a
digest of its source, and the job's settings (``job``: kwargs, arguments, partitions, sort columns).
The job runs again through :class:`~airflow_mlops.etl.job.SparkJob` into the same store, recorded
with ``reproduces`` in its extra: the same rows give the same snapshot id; otherwise the files that
differ are named.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops.config import mlops_home
from airflow_mlops.errors import MlopsError
from airflow_mlops.reproduce.checks import OpenStore, check_code, restore_verified, source_difference
from airflow_mlops.reproduce.report import ReproductionReport, Row
from airflow_mlops.snapshots import ManifestEntry, SnapshotStore
from airflow_mlops.utils.imports import import_object

#: Key of the derived snapshot's record ``extra`` naming the snapshot it reproduces.
REPRODUCES_KEY = "reproduces"


def _file_rows(recorded: list[ManifestEntry], reproduced: list[ManifestEntry]) -> list[Row]:
    """A row per output file that is missing on one side or has other bytes (digests shortened)."""
    before = {entry.path: entry.digest[:12] for entry in recorded}
    after = {entry.path: entry.digest[:12] for entry in reproduced}
    return [Row(path, before.get(path), after.get(path), None, False)
            for path in sorted(set(before) | set(after)) if before.get(path) != after.get(path)]


def reproduce_snapshot(store: SnapshotStore, snapshot_id: str, runner: Any, *, open_store: OpenStore,
                       allow_code_drift: bool, identity: dict[str, Any]) -> ReproductionReport:
    """Derive the snapshot again from its record with ``runner`` (a :class:`~airflow_mlops.etl.job.SparkRunner`)."""
    from airflow_mlops.etl.job import SparkJob
    from airflow_mlops.etl.spark import EtlInput, code_identity

    full_id = store.resolve(snapshot_id)
    derived = [record for record in store.records(full_id) if "code" in record.extra]
    if not derived:
        source = store.records(full_id)[-1].source
        raise MlopsError(f"snapshot {full_id} was taken from {source}, not derived by a Spark ETL job: nothing to re-run")
    record = derived[-1]  # the first derivation recorded
    if "job" not in record.extra:
        raise MlopsError(f"the record of snapshot {full_id} has no job settings (made before reproduce existed); "
                         "it cannot be re-run exactly")
    code, spark, settings = record.extra["code"], record.extra["spark"], record.extra["job"]
    application = spark.get("application")
    transform = None if application else import_object(code["transform"])
    present = code_identity(application or transform)
    difference = source_difference("application" if application else "transformation",
                                   (code.get("code_file"), code.get("code_digest")),
                                   (present.get("code_file"), present.get("code_digest")))
    differences = check_code([difference] if difference else [], f"snapshot {full_id}", allow_code_drift)
    job = SparkJob(transform=transform, application=application, transform_kwargs=settings["transform_kwargs"],
                   application_args=settings["application_args"], partitions=settings["partitions"],
                   sort_by=settings["sort_by"])

    inputs = []
    for name, described in record.extra["inputs"].items():
        if "uri" not in described:
            raise MlopsError(f"input {name!r} of snapshot {full_id} was the path {described['path']}, not a snapshot: "
                             "its data was not recorded, so it cannot be reproduced")
        input_id, path = restore_verified(open_store, described["uri"])
        inputs.append(EtlInput(name, path, input_id, described["uri"], described.get("format")))
    new, _tables = job.run(runner, store, inputs, staging_root=mlops_home() / "etl-staging", airflow=identity,
                           extra={REPRODUCES_KEY: full_id})
    rows = [Row("snapshot id", full_id, new.snapshot_id, None, new.snapshot_id == full_id)]
    if new.snapshot_id != full_id:
        rows += _file_rows(store.manifest(full_id), store.manifest(new.snapshot_id))
    return ReproductionReport(full_id, "ETL snapshot", new.snapshot_id, 0.0, rows, None, differences, label="output")
