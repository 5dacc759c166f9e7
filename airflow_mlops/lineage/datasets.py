"""How a snapshot and a model version are named as datasets, the same in ``airflow-mlops lineage`` and OpenLineage.

A dataset is the logical thing that gets new versions: the output of one producing task
(``<store>/<dag_id>/<task_id>``, the task's Asset), or, for a snapshot taken outside Airflow, its
source. Namespace and name follow OpenLineage's naming convention: ``file`` and the absolute path for
a local store, ``s3://<bucket>`` and the key path on S3. The snapshot id is the dataset's version. A
model is the registered model in its registry, its version number the dataset's version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit


@dataclass(frozen=True)
class DatasetRef:
    """An OpenLineage-style dataset identity plus the version that was read or written."""

    namespace: str
    name: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"namespace": self.namespace, "name": self.name, "version": self.version}


def snapshot_dataset(record: Any) -> DatasetRef:
    """The dataset a :class:`~airflow_mlops.snapshots.records.SnapshotRecord` is a version of."""
    airflow = record.airflow or {}
    if airflow.get("dag_id") and airflow.get("task_id"):
        namespace, store_path = location(record.store)
        name = "/".join(part for part in (store_path, airflow["dag_id"], airflow["task_id"]) if part)
    else:
        namespace, name = location(record.source)
    return DatasetRef(namespace=namespace, name=name, version=record.snapshot_id)


def location(uri: str) -> tuple[str, str]:
    """(namespace, name) of a path or URI by OpenLineage's naming: ``file`` and the absolute path;
    ``s3://<bucket>`` and the key path; any other scheme as it is (without credentials), with no name."""
    parts = urlsplit(uri)
    if parts.scheme in ("s3", "s3a"):
        return f"s3://{parts.hostname}", parts.path.strip("/")
    if parts.scheme in ("", "file"):
        path = unquote(parts.path) if parts.scheme else uri
        return "file", str(PurePosixPath(path)).rstrip("/") or "/"
    return _without_credentials(uri), ""


def model_dataset(registry_uri: str, name: str, version: str | int) -> DatasetRef:
    """The dataset of version ``version`` of registered model ``name`` in the registry at ``registry_uri``."""
    return DatasetRef(namespace=_without_credentials(registry_uri), name=f"models/{name}", version=str(version))


def _without_credentials(uri: str) -> str:
    """``uri`` without ``user:password@`` (a store or registry URI may carry them; lineage must not)."""
    parts = urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
