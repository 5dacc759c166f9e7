"""Lineage as a graph of snapshots, MLflow runs and model versions, walked both ways from one reference.

Edges run from producer to product: a snapshot to the snapshots derived from it (``derived``) and
to the runs that read it (``input``), a tuning run to its trials (``trial``), a run to the model
versions registered from it (``registered``), a model version (or an unregistered run's model) to
the snapshots it scored (``scored``). Upstream steps read the records themselves (a snapshot
record's parents and model, a run's snapshot tag, a version's run); downstream steps are one lookup
each: the snapshot store's index (children, a model's outputs), one MLflow ``search_runs`` on the
snapshot tag, one ``search_model_versions`` on the run id. So a walk reads only the records on its
path, however many the store and the tracking server hold. No Airflow import: usable in a notebook.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from airflow_mlops.errors import MlopsError, SnapshotError
from airflow_mlops.lineage.datasets import model_dataset, snapshot_dataset
from airflow_mlops.registry.history import history
from airflow_mlops.registry.promotion import (
    CHALLENGER_SCORE_TAG,
    CHAMPION_SCORE_TAG,
    CHAMPION_VERSION_TAG,
    DECISION_TAG,
    REASON_TAG,
    RULE_TAG,
)
from airflow_mlops.registry.registration import MODEL_URI_TAG
from airflow_mlops.snapshots import SnapshotStore, is_snapshot_id, parse_snapshot_ref
from airflow_mlops.tracking.runs import ERROR_TAG, SNAPSHOT_TAG, SUPERSEDED_TAG, TAG_PREFIX
from airflow_mlops.tuning.trial_runs import PARENT_RUN_TAG, STUDY_TAG

SNAPSHOT, RUN, MODEL_VERSION = "snapshot", "run", "model_version"
#: Hex digits of an MLflow run id.
RUN_ID_LENGTH = 32
_PAGE = 1000


@dataclass(frozen=True)
class Node:
    """A snapshot, run or model version: ``id`` is ``<kind>:<key>``, ``data`` its JSON fields."""

    id: str
    kind: str
    data: dict[str, Any]
    direction: str = ""  # "focus", "upstream" or "downstream" of the walk's reference

    @property
    def time(self) -> str:
        return self.data.get("time") or ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "direction": self.direction, **self.data}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    relation: str  # derived, input, trial, registered or scored


@dataclass
class Lineage:
    """The ancestors and descendants of one node (the focus), with the edges between them."""

    ref: str
    focus: str
    store: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def children(self, node_id: str) -> list[str]:
        """Targets of ``node_id``'s edges: runs, then model versions, then snapshots, each oldest first."""
        order = {RUN: 0, MODEL_VERSION: 1, SNAPSHOT: 2}
        targets = {edge.target for edge in self.edges if edge.source == node_id}
        return sorted(targets, key=lambda n: (order[self.nodes[n].kind], self.nodes[n].time, n))

    def roots(self) -> list[str]:
        """Nodes with no edge into them, oldest first: where the tree starts."""
        targets = {edge.target for edge in self.edges}
        return sorted((n for n in self.nodes if n not in targets), key=lambda n: (self.nodes[n].time, n))

    def order(self) -> list[str]:
        """Every node once, depth first from the roots: the order of the tree."""
        seen: dict[str, None] = {}

        def visit(node_id: str) -> None:
            if node_id not in seen:
                seen[node_id] = None
                for child in self.children(node_id):
                    visit(child)

        for root in self.roots():
            visit(root)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "focus": self.focus,
            "store": self.store,
            "nodes": [self.nodes[node_id].to_dict() for node_id in self.order()],
            "edges": [{"from": e.source, "to": e.target, "relation": e.relation}
                      for e in sorted(self.edges, key=lambda e: (e.source, e.target))],
        }


def _iso(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, timezone.utc).isoformat(timespec="seconds") if millis else None


def _airflow_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """The task instance an MLflow entity names in its ``airflow.*`` tags, numbers as numbers."""
    fields: dict[str, Any] = {key[len(TAG_PREFIX):]: value for key, value in tags.items() if key.startswith(TAG_PREFIX)}
    for key in ("map_index", "try_number"):
        if str(fields.get(key, "")).lstrip("-").isdigit():
            fields[key] = int(fields[key])
    return fields


def _not_found(error: Exception) -> bool:
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


class LineageWalker:
    """Walks the lineage of a snapshot, run or model version in one snapshot store and one MLflow server.

    Each record is read at most once per walker (cached), and each step costs a bounded number of
    reads: see the module docstring. ``registry_uri`` names the registry in model datasets
    (default: the client's tracking URI, MLflow's own default for the registry).
    """

    def __init__(self, store: SnapshotStore, client: Any, registry_uri: str | None = None) -> None:
        self.store = store
        self.client = client
        self.registry_uri = registry_uri or client.tracking_uri
        self._nodes: dict[str, Node] = {}
        self._runs: dict[str, Any] = {}
        self._versions: dict[tuple[str, str], Any] = {}
        self._models: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {}
        self._experiment_ids: list[str] | None = None

    # ----------------------------------------------------------------- the walk

    def walk(self, ref: str) -> Lineage:
        """The focus ``ref`` resolves to, every ancestor and every descendant, and the edges among them."""
        focus = self.resolve(ref)
        directions = {focus: "focus"}
        edges: set[Edge] = set()
        for direction, step in (("upstream", self.upstream), ("downstream", self.downstream)):
            queue = deque([focus])
            while queue:
                current = queue.popleft()
                for other, relation in step(current):
                    edges.add(Edge(other, current, relation) if direction == "upstream" else Edge(current, other, relation))
                    if other not in directions:
                        directions[other] = direction
                        queue.append(other)
        nodes = {node_id: replace(self.node(node_id), direction=way) for node_id, way in directions.items()}
        return Lineage(ref, focus, self.store.uri, nodes, list(edges))

    def resolve(self, ref: str) -> str:
        """The node id of ``ref``: a snapshot id or unique prefix (or its URI ``<store>#<id>``), an MLflow run
        id, ``runs:/RUN_ID/...``, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``; one clear error when it
        names nothing."""
        text = ref.strip()
        if "#" in text:
            store, text = parse_snapshot_ref(text)
            if store != self.store.uri:
                raise MlopsError(f"{ref} names a snapshot in store {store}, not {self.store.uri}: give --store {store}")
        if text.startswith(("models:/", "runs:/")):
            from airflow_mlops.predict.model import resolve_model

            model = resolve_model(self.client, text)
            return f"{MODEL_VERSION}:{model.name}/{model.version}" if model.name else self._run_id_node(model.run_id, ref)
        if not is_snapshot_id(text):
            raise MlopsError(f"{ref!r} is not a snapshot id, an MLflow run id, models:/NAME/VERSION or models:/NAME@ALIAS")
        text = text.lower()
        if len(text) == RUN_ID_LENGTH and self._run(text) is not None:
            return f"{RUN}:{text}"
        try:
            return f"{SNAPSHOT}:{self.store.resolve(text)}"
        except SnapshotError:
            if len(text) == RUN_ID_LENGTH:
                raise MlopsError(f"{ref} is neither an MLflow run nor a snapshot in {self.store.uri}") from None
            raise

    def _run_id_node(self, run_id: str, ref: str) -> str:
        if self._run(run_id) is None:
            raise MlopsError(f"{ref}: no MLflow run {run_id}")
        return f"{RUN}:{run_id}"

    def upstream(self, node_id: str) -> list[tuple[str, str]]:
        """(node, relation) for each direct producer or input of ``node_id``, read from its own record."""
        node = self.node(node_id)
        data = node.data
        if data.get("missing"):
            return []
        if node.kind == SNAPSHOT:
            found = [(f"{SNAPSHOT}:{parent}", "derived") for parent in data["parents"]]
            model = data.get("model") or {}
            if model.get("name") and model.get("version") is not None:
                found.append((f"{MODEL_VERSION}:{model['name']}/{model['version']}", "scored"))
            elif model.get("run_id"):
                found.append((f"{RUN}:{model['run_id']}", "scored"))
            return found
        if node.kind == RUN:
            if data.get("parent_run_id"):
                return [(f"{RUN}:{data['parent_run_id']}", "trial")]
            return [(f"{SNAPSHOT}:{data['snapshot_id']}", "input")] if data.get("snapshot_id") else []
        return [(f"{RUN}:{data['run_id']}", "registered")] if data.get("run_id") else []

    def downstream(self, node_id: str) -> list[tuple[str, str]]:
        """(node, relation) for each direct product of ``node_id``: one index listing or MLflow search each."""
        node = self.node(node_id)
        data = node.data
        if data.get("missing"):
            return []
        if node.kind == SNAPSHOT:
            snapshot_id = data["snapshot_id"]
            found = [(f"{SNAPSHOT}:{child}", "derived") for child in self.store.children(snapshot_id)]
            found += [(f"{RUN}:{run.info.run_id}", "input") for run in self._runs_reading(snapshot_id)]
        elif node.kind == RUN:
            if data["type"] != "training":
                return []  # a study's trials are summarized on its run; neither logs a model
            found = [(f"{MODEL_VERSION}:{v.name}/{v.version}", "registered") for v in self._versions_of(data["run_id"])]
            found += [(f"{SNAPSHOT}:{sid}", "scored") for sid in self.store.outputs_of(run_id=data["run_id"])]
        else:
            found = [(f"{SNAPSHOT}:{sid}", "scored")
                     for sid in self.store.outputs_of(model=data["name"], version=data["version"])]
        # an index key whose record never came (a writer killed in between) names no snapshot
        return [(other, relation) for other, relation in found if not self.node(other).data.get("missing")]

    # ----------------------------------------------------------------- reading records

    def node(self, node_id: str) -> Node:
        """The node ``node_id`` (``snapshot:ID``, ``run:ID``, ``model_version:NAME/N``), read once per walker."""
        if node_id not in self._nodes:
            kind, _, key = node_id.partition(":")
            load = {SNAPSHOT: self._snapshot_node, RUN: self._run_node, MODEL_VERSION: self._version_node}[kind]
            self._nodes[node_id] = load(node_id, key)
        return self._nodes[node_id]

    def _snapshot_node(self, node_id: str, snapshot_id: str) -> Node:
        try:
            records = self.store.records(snapshot_id)
        except SnapshotError:
            records = []
        if not records:
            return Node(node_id, SNAPSHOT, {"snapshot_id": snapshot_id, "missing": True, "time": None})
        newest = records[0]
        parents = list(dict.fromkeys(parent for record in records for parent in record.parents))
        model = newest.extra.get("model")
        return Node(node_id, SNAPSHOT, {
            "snapshot_id": snapshot_id,
            "role": "predictions" if model else "derived" if parents else "raw",
            "source": newest.source,
            "uri": newest.uri,
            "files": newest.files,
            "bytes": newest.bytes,
            "time": newest.created,
            "airflow": newest.airflow,
            "parents": parents,
            "model": model,
            "dataset": snapshot_dataset(newest).to_dict(),
            "earlier_records": [{"time": r.created, "source": r.source, "airflow": r.airflow} for r in records[1:]],
        })

    def _run(self, run_id: str) -> Any | None:
        """The MLflow run (cached), or None when there is none."""
        if run_id not in self._runs:
            from mlflow.exceptions import MlflowException

            try:
                self._runs[run_id] = self.client.get_run(run_id)
            except MlflowException as error:
                if not _not_found(error):
                    raise
                self._runs[run_id] = None
        return self._runs[run_id]

    def _run_node(self, node_id: str, run_id: str) -> Node:
        run = self._run(run_id)
        if run is None:
            return Node(node_id, RUN, {"run_id": run_id, "missing": True, "time": None})
        tags, metrics = run.data.tags, run.data.metrics
        kind = "trial" if PARENT_RUN_TAG in tags else "tuning" if STUDY_TAG in tags else "training"
        study = None
        if kind == "tuning":
            study = {"name": tags[STUDY_TAG], "n_complete_trials": metrics.get("n_complete_trials"),
                     "best": {name[len("best_"):]: value for name, value in metrics.items() if name.startswith("best_")}}
        elif kind == "trial":
            study = {"name": tags[STUDY_TAG], "trial_number": tags.get("optuna.trial_number")}
        return Node(node_id, RUN, {
            "run_id": run_id,
            "type": kind,
            "name": run.info.run_name,
            "experiment_id": run.info.experiment_id,
            "status": run.info.status,
            "time": _iso(run.info.start_time),
            "end_time": _iso(run.info.end_time),
            "airflow": _airflow_from_tags(tags),
            "snapshot_id": tags.get(SNAPSHOT_TAG),
            "snapshot_uri": tags.get("airflow_mlops.snapshot_uri"),
            "parent_run_id": tags.get(PARENT_RUN_TAG),
            "model_uri": tags.get(MODEL_URI_TAG),
            "study": study,
            "superseded_by": tags.get(SUPERSEDED_TAG),
            "error": tags.get(ERROR_TAG),
        })

    def _runs_reading(self, snapshot_id: str) -> list[Any]:
        """Runs tagged with ``snapshot_id`` as their input, in every experiment: one search (per page)."""
        if self._experiment_ids is None:
            self._experiment_ids = [e.experiment_id for e in all_pages(self.client.search_experiments)]
        if not self._experiment_ids:
            return []
        runs = all_pages(self.client.search_runs, self._experiment_ids,
                           filter_string=f"tags.`{SNAPSHOT_TAG}` = '{snapshot_id}'")
        for run in runs:
            self._runs[run.info.run_id] = run
        return runs

    def _versions_of(self, run_id: str) -> list[Any]:
        """Model versions registered from ``run_id``'s model, in every registered model: one search."""
        versions = all_pages(self.client.search_model_versions, f"run_id = '{run_id}'")
        for version in versions:
            self._versions[(version.name, str(version.version))] = version
        return versions

    def _version_node(self, node_id: str, key: str) -> Node:
        name, _, number = key.rpartition("/")
        version = self._versions.get((name, number))
        if version is None:
            from mlflow.exceptions import MlflowException

            try:
                version = self.client.get_model_version(name, number)
            except MlflowException as error:
                if not _not_found(error):
                    raise
                return Node(node_id, MODEL_VERSION, {"name": name, "version": number, "missing": True, "time": None})
        aliases, entries = self._registered_model(name)
        tags = version.tags
        gate = None
        if DECISION_TAG in tags:
            rule = tags.get(RULE_TAG)
            gate = {"decision": tags[DECISION_TAG], "reason": tags.get(REASON_TAG),
                    "metric": _json(rule).get("metric") if rule else None,
                    "challenger_score": _float(tags.get(CHALLENGER_SCORE_TAG)),
                    "champion_score": _float(tags.get(CHAMPION_SCORE_TAG)),
                    "champion_version": tags.get(CHAMPION_VERSION_TAG) or None}
        return Node(node_id, MODEL_VERSION, {
            "name": name,
            "version": number,
            "run_id": version.run_id,
            "snapshot_id": tags.get(SNAPSHOT_TAG),
            "source": version.source,
            "status": version.status,
            "time": _iso(version.creation_timestamp),
            "aliases": sorted(alias for alias, target in aliases.items() if str(target) == number),
            "airflow": _airflow_from_tags(tags),
            "gate": gate,
            "history": [entry for entry in entries if number in (entry.get("from_version"), entry.get("to_version"))],
            "dataset": model_dataset(self.registry_uri, name, number).to_dict(),
        })

    def _registered_model(self, name: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """(alias -> version, promotion history) of a registered model, read once per walker."""
        if name not in self._models:
            self._models[name] = (dict(self.client.get_registered_model(name).aliases), history(self.client, name))
        return self._models[name]


def all_pages(search: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Every page of an MLflow search (``client.search_runs``, ``search_model_versions``, ...)."""
    found, token = [], None
    while True:
        page = search(*args, max_results=_PAGE, page_token=token, **kwargs)
        found += list(page)
        token = page.token
        if not token:
            return found


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
