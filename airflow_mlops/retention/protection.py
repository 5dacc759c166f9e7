"""What registered models still need: every snapshot upstream of any registered model version.

Whatever its aliases (an archived version can still be rolled back to, or reproduced): the version's
training snapshot, that snapshot's ancestors (ETL parents, and whatever those were derived or scored
from), and the inputs of the tuning run of the same Airflow DAG run. Snapshots a version wrote
(predictions) are not needed by it. Read through lineage, so this sits above it; no Airflow import.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from airflow_mlops.lineage.model import RUN, SNAPSHOT
from airflow_mlops.tracking.paging import all_pages
from airflow_mlops.lineage.walk import LineageWalker
from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.tracking.runs import airflow_tags_filter
from airflow_mlops.tracking.tags import PARENT_RUN_TAG, STUDY_TAG


def protected_snapshots(store: SnapshotStore, client: Any) -> dict[str, str]:
    """snapshot id -> why a registered model version needs it, for every version of every registered model
    (the snapshots of this store: one MLflow server may serve models trained on several stores).

    Walks upstream from each version with the lineage walker (the version's run, its input snapshot,
    their parents, ...), adding the version's own snapshot tag (should its run be gone) and the inputs
    of the tuning run of the training run's Airflow DAG run (MLflow links the two no other way).
    """
    walker = LineageWalker(store, client)
    versions = sorted(all_pages(client.search_model_versions), key=lambda v: (v.name, int(v.version)))
    reasons: dict[str, str] = {}
    for version in versions:
        for snapshot_id, reason in _needed_by(walker, f"model_version:{version.name}/{version.version}"):
            reasons.setdefault(snapshot_id, reason)
    return reasons


def _needed_by(walker: LineageWalker, version_node: str) -> list[tuple[str, str]]:
    """(snapshot id, reason) for every snapshot upstream of one model version, nearest first."""
    name, _, number = version_node.partition(":")[2].rpartition("/")
    label = f"model {name} v{number}"
    training = {other for other, relation in walker.upstream(version_node) if relation == "registered"}
    queue, seen, found = deque([version_node]), {version_node}, []
    while queue:
        node_id = queue.popleft()
        for other, relation in _upstream(walker, node_id, version_node, training):
            if other in seen:
                continue
            seen.add(other)
            queue.append(other)
            if other.startswith(f"{SNAPSHOT}:") and not walker.node(other).data.get("missing"):  # not in another store
                found.append((other.partition(":")[2], _reason(walker, node_id, relation, label, {version_node, *training})))
    return found


def _upstream(walker: LineageWalker, node_id: str, version_node: str, training: set[str]) -> list[tuple[str, str]]:
    """The walker's upstream step (only ancestors are read), plus a version's snapshot tag and its
    training run's tuning runs."""
    found = list(walker.upstream(node_id))
    data = walker.node(node_id).data
    if node_id == version_node and data.get("snapshot_id"):
        found.append((f"{SNAPSHOT}:{data['snapshot_id']}", "input"))
    if node_id in training:
        found += [(f"{RUN}:{run_id}", "tuned") for run_id in _tuning_runs(walker.client, data)]
    return found


def _tuning_runs(client: Any, training: Mapping[str, Any]) -> list[str]:
    """Ids of the tuning (parent) runs in the training run's experiment and Airflow DAG run, over every page."""
    airflow = training.get("airflow") or {}
    if training.get("missing") or not (airflow.get("dag_id") and airflow.get("run_id")):
        return []
    runs = all_pages(client.search_runs, [training["experiment_id"]],
                     filter_string=airflow_tags_filter(airflow, ("dag_id", "run_id")))
    return [run.info.run_id for run in runs if STUDY_TAG in run.data.tags and PARENT_RUN_TAG not in run.data.tags]


def _reason(walker: LineageWalker, producer: str, relation: str, label: str, direct: set[str]) -> str:
    """Why a snapshot reached from ``producer`` by ``relation`` is needed by the model ``label``."""
    kind, _, key = producer.partition(":")
    if relation == "derived":
        return f"parent of {key[:12]} ({label})"
    if relation == "input" and producer in direct:
        return f"{label} trains on it"
    what = f"{walker.node(producer).data.get('type')} run" if kind == "run" else kind.replace("_", " ")
    return f"input of {what} {key[:12]} ({label})"
