"""The lineage graph as data: snapshot, run and model-version nodes, producer-to-product edges, and the
tree order a walk's result is shown in.

Edges run from producer to product: a snapshot to the snapshots derived from it (``derived``) and
to the runs that read it (``input``), a tuning run to its trials (``trial``), a run to the model
versions registered from it (``registered``), a model version (or an unregistered run's model) to
the snapshots it scored (``scored``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SNAPSHOT, RUN, MODEL_VERSION = "snapshot", "run", "model_version"


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
