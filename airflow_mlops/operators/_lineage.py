"""OpenLineage for every operator: what ``execute`` read and wrote, turned into the provider's OperatorLineage.

``execute`` notes its snapshots, model versions and run details on ``self._lineage`` as soon as it
knows them (so a failure event has what was resolved); the OpenLineage listener then calls the facet
methods, which only run when an OpenLineage transport is configured. They name an input snapshot from its store's
records (looked up then, so nothing is read for users without OpenLineage) and never raise: a
dataset that cannot be described is left out with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.lineage.datasets import DatasetRef, snapshot_dataset
from airflow_mlops.utils.airflow_context import task_identity


@dataclass
class SnapshotUse:
    """A snapshot read or written: its URI, its local files (for its schema) and, for an output, its record."""

    uri: str
    path: Path | None = None
    record: Any = None


@dataclass
class TaskLineage:
    """What one execution of a task read and wrote, and the facts of its run (``MlopsRunFacet`` fields)."""

    identity: dict[str, Any]
    aws_conn_id: str | None = None
    inputs: list[SnapshotUse | DatasetRef] = field(default_factory=list)
    outputs: list[SnapshotUse | DatasetRef] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def code(self, tags: dict[str, str]) -> None:
        """The git commit and file digests of a training's ``CodeVersion`` tags."""
        from airflow_mlops.tracking.tags import GIT_COMMIT_TAG

        self.run["gitCommit"] = tags.get(GIT_COMMIT_TAG)
        self.run.setdefault("codeDigests", {}).update({
            key.removeprefix("airflow_mlops.").removesuffix("_digest"): value
            for key, value in tags.items() if key.endswith("_digest")
        })


class OpenLineageMixin:
    """``get_openlineage_facets_on_complete``/``_on_failure`` from ``self._lineage``, filled by ``execute``."""

    _lineage: TaskLineage | None = None

    def start_lineage(self, context: Any) -> TaskLineage:
        """A fresh record for this execution (a retry in the same process starts from nothing)."""
        self._lineage = TaskLineage(task_identity(context), getattr(self, "aws_conn_id", None))
        return self._lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs, outputs (snapshots with version and schema, model versions) and the ``airflowMlops`` run facet."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        lineage = self._lineage
        if lineage is None:
            return OperatorLineage()
        from airflow.providers.common.compat.openlineage.facet import InputDataset, OutputDataset

        from airflow_mlops.lineage.openlineage import RUN_FACET_KEY, MlopsRunFacet

        run = {key: value for key, value in lineage.run.items() if value}
        return OperatorLineage(
            inputs=[d for d in (self._dataset(InputDataset, use, lineage) for use in lineage.inputs) if d],
            outputs=[d for d in (self._dataset(OutputDataset, use, lineage) for use in lineage.outputs) if d],
            run_facets={RUN_FACET_KEY: MlopsRunFacet(**run)} if run else {},
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """What the task had read before it failed, and its MLflow run if one had started."""
        return self.get_openlineage_facets_on_complete(task_instance)

    def _dataset(self, kind: type, use: SnapshotUse | DatasetRef, lineage: TaskLineage) -> Any:
        """One OpenLineage dataset, or None (logged) when its store cannot be read."""
        from airflow_mlops.lineage.openlineage import dataset_facets, snapshot_tables

        try:
            if isinstance(use, DatasetRef):
                return kind(namespace=use.namespace, name=use.name, facets=dataset_facets(use))
            record = use.record or _producing_record(use.uri, lineage)
            ref = snapshot_dataset(record)
            return kind(namespace=ref.namespace, name=ref.name, facets=dataset_facets(ref, snapshot_tables(record, use.path)))
        except Exception as error:  # noqa: BLE001 - lineage must never fail the task; the event goes without it
            self.log.warning("OpenLineage: leaving out %s: %s", getattr(use, "uri", use), error)
            return None


def _producing_record(uri: str, lineage: TaskLineage) -> Any:
    """The record naming the input snapshot at ``uri``, read from its store."""
    from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook
    from airflow_mlops.lineage.openlineage import producing_record
    from airflow_mlops.snapshots import parse_snapshot_ref

    store_uri, snapshot_id = parse_snapshot_ref(uri)
    records = SnapshotStoreHook(store_uri, lineage.aws_conn_id).get_conn().records(snapshot_id)
    return producing_record(records, lineage.identity)
