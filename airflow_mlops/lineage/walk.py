"""Walking the lineage both ways from one reference: a snapshot, an MLflow run or a model version.

Upstream steps read the records themselves (a snapshot record's parents and model, a run's snapshot
tag, a version's run); downstream steps are one lookup each: the snapshot store's index (children, a
model's outputs), one MLflow ``search_runs`` on the snapshot tag, one ``search_model_versions`` on the
run id. So a walk reads only the records on its path, however many the store and the tracking server
hold. No Airflow import: usable in a notebook.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

from airflow_mlops.errors import MlopsError, SnapshotError
from airflow_mlops.lineage.model import MODEL_VERSION, RUN, SNAPSHOT, Edge, Lineage, Node
from airflow_mlops.lineage.readers import NodeReader
from airflow_mlops.snapshots import SnapshotStore, is_snapshot_id, parse_snapshot_ref

#: Hex digits of an MLflow run id.
RUN_ID_LENGTH = 32


class LineageWalker:
    """Walks the lineage of a snapshot, run or model version in one snapshot store and one MLflow server.

    Each step costs a bounded number of reads (see the module docstring), and each record is read at
    most once per walker, by its :class:`~airflow_mlops.lineage.readers.NodeReader`. ``registry_uri``
    names the registry in model datasets (default: the client's tracking URI, MLflow's own default for
    the registry).
    """

    def __init__(self, store: SnapshotStore, client: Any, registry_uri: str | None = None) -> None:
        self.store = store
        self.client = client
        self.reader = NodeReader(store, client, registry_uri)

    def node(self, node_id: str) -> Node:
        """The node ``node_id`` (``snapshot:ID``, ``run:ID``, ``model_version:NAME/N``), read once per walker."""
        return self.reader.node(node_id)

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
        if len(text) == RUN_ID_LENGTH and self.reader.run(text) is not None:
            return f"{RUN}:{text}"
        try:
            return f"{SNAPSHOT}:{self.store.resolve(text)}"
        except SnapshotError:
            if len(text) == RUN_ID_LENGTH:
                raise MlopsError(f"{ref} is neither an MLflow run nor a snapshot in {self.store.uri}") from None
            raise

    def _run_id_node(self, run_id: str, ref: str) -> str:
        if self.reader.run(run_id) is None:
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
            found += [(f"{RUN}:{run.info.run_id}", "input") for run in self.reader.runs_reading(snapshot_id)]
        elif node.kind == RUN:
            if data["type"] != "training":
                return []  # a study's trials are summarized on its run; neither logs a model
            found = [(f"{MODEL_VERSION}:{v.name}/{v.version}", "registered") for v in self.reader.versions_of(data["run_id"])]
            found += [(f"{SNAPSHOT}:{sid}", "scored") for sid in self.store.outputs_of(run_id=data["run_id"])]
        else:
            found = [(f"{SNAPSHOT}:{sid}", "scored")
                     for sid in self.store.outputs_of(model=data["name"], version=data["version"])]
        # an index key whose record never came (a writer killed in between) names no snapshot
        return [(other, relation) for other, relation in found if not self.node(other).data.get("missing")]
