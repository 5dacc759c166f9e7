"""A walked lineage as text: a tree to read, JSON for scripts, Graphviz dot for a picture.

The tree starts at the oldest ancestors and goes down to the last products; a node with several
producers in the walk (predictions: their input snapshot and the model version) is printed in full
under the first and as one ``(shown above)`` line under the others. The focus is marked ``◀``.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_mlops.lineage.model import MODEL_VERSION, RUN, SNAPSHOT, Lineage, Node


def render(lineage: Lineage, fmt: str = "tree") -> str:
    """``lineage`` in format ``tree``, ``json`` or ``dot``."""
    return {"tree": to_tree, "json": to_json, "dot": to_dot}[fmt](lineage)


def to_json(lineage: Lineage) -> str:
    return json.dumps(lineage.to_dict(), indent=2, default=str)


def _minute(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else ""


def _task(airflow: dict[str, Any] | None) -> str:
    """``dag/run/task #try`` (and the map index of a mapped task) of the task instance that made a record."""
    if not airflow or not airflow.get("dag_id"):
        return ""
    mapped = f"[{airflow['map_index']}]" if airflow.get("map_index") not in (None, -1, "-1") else ""
    return f"{airflow['dag_id']}/{airflow.get('run_id')}/{airflow.get('task_id')}{mapped} #{airflow.get('try_number')}"


def _what(node: Node) -> str:
    """What the node is, in a few words: a snapshot's origin, a run's type and state, a version's gate."""
    data = node.data
    if node.kind == SNAPSHOT:
        if data["role"] == "predictions":
            model = data["model"]
            via = f" via @{model['alias']}" if model.get("alias") else ""
            return f"predictions by {model.get('model_uri')}{via}"
        return f"raw {data['source']}" if data["role"] == "raw" else data["source"]
    if node.kind == RUN:
        study = data["study"] or {}
        if data["type"] == "tuning":
            trials = study.get("n_complete_trials")
            details = [f"{trials:g} trials"] if trials is not None else []
            details += [f"best {metric} {value:.4g}" for metric, value in study["best"].items()]
            what = f"(tuning study {', '.join([study['name'], *details])})"
        elif data["type"] == "trial":
            what = f"(trial {study.get('trial_number')} of study {study['name']})"
        else:
            what = "(training)"
        return what if data["status"] == "FINISHED" else f"{what} {data['status']}"
    gate = data["gate"]
    if not gate:
        return "no gate decision"
    score = gate.get("challenger_score")
    scored = f" ({gate['metric']} {score:.4g})" if gate.get("metric") and score is not None else ""
    return f"gate: {gate['decision']}{scored}"


def _flags(node: Node) -> list[str]:
    """What a reader must not miss: missing records, superseded or failed runs, earlier records."""
    data = node.data
    if data.get("missing"):
        return ["(no record found)"]
    flags = []
    if data.get("superseded_by"):
        flags.append(f"[superseded by run {data['superseded_by'][:8]}]")
    if data.get("error"):
        error = data["error"] if len(data["error"]) <= 80 else data["error"][:77] + "..."
        flags.append(f"[error: {error}]")
    if data.get("earlier_records"):
        flags.append(f"(+{len(data['earlier_records'])} earlier records)")
    return flags


def _title(node: Node) -> str:
    data = node.data
    if node.kind == SNAPSHOT:
        return f"snapshot {data['snapshot_id'][:12]}"
    if node.kind == RUN:
        return f"run {data['run_id'][:8]}"
    aliases = f" [{', '.join(data['aliases'])}]" if data.get("aliases") else ""
    return f"model {data['name']} v{data['version']}{aliases}"


def _parts(node: Node) -> list[str]:
    """The pieces of a node's description, shared by the tree (one line) and dot (one per line)."""
    if node.data.get("missing"):
        return [_title(node), *_flags(node)]
    parts = [_title(node), _what(node), _task(node.data.get("airflow")), _minute(node.time), *_flags(node)]
    return [part for part in parts if part]


def _history_lines(node: Node) -> list[str]:
    """A model version's promotion history entries (the alias moves that involved it)."""
    return [
        f"history #{entry.get('seq')} {_minute(entry.get('at'))} {entry.get('action')} {entry.get('alias')}: "
        f"{entry.get('from_version') or '-'} -> {entry.get('to_version') or '-'}  by {entry.get('by')}  "
        f"{entry.get('reason', '')}".rstrip()
        for entry in node.data.get("history") or []
    ]


def to_tree(lineage: Lineage) -> str:
    lines: list[str] = []
    printed: set[str] = set()

    def emit(node_id: str, prefix: str, connector: str, child_prefix: str) -> None:
        node = lineage.nodes[node_id]
        mark = "  ◀" if node_id == lineage.focus else ""
        if node_id in printed:
            lines.append(f"{prefix}{connector}{_title(node)}  (shown above){mark}")
            return
        printed.add(node_id)
        lines.append(f"{prefix}{connector}{'  '.join(_parts(node))}{mark}")
        children = lineage.children(node_id)
        lines.extend(f"{child_prefix}{'│  ' if children else '   '}{line}" for line in _history_lines(node))
        for index, child in enumerate(children):
            last = index == len(children) - 1
            emit(child, child_prefix, "└─ " if last else "├─ ", child_prefix + ("   " if last else "│  "))

    for root in lineage.roots():
        emit(root, "", "", "")
    return "\n".join(lines)


_SHAPES = {SNAPSHOT: "folder", RUN: "box", MODEL_VERSION: "component"}


def _quote(*lines: str) -> str:
    """A dot string of ``lines``, separated by dot's line break ``\\n``."""
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def to_dot(lineage: Lineage) -> str:
    """Graphviz dot text: ``airflow-mlops lineage REF --format dot | dot -Tsvg > lineage.svg``."""
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for node_id in lineage.order():
        node = lineage.nodes[node_id]
        attributes = [f"label={_quote(*_parts(node))}", f"shape={_SHAPES[node.kind]}"]
        styles = ["rounded"] if node.kind == RUN else []
        if node_id == lineage.focus:
            styles += ["bold", "filled"]
            attributes.append('fillcolor="#fff2b3"')
        if node.data.get("missing") or node.data.get("superseded_by") or node.data.get("error"):
            styles.append("dashed")
        if styles:
            attributes.append(f"style={_quote(','.join(styles))}")
        lines.append(f"  {_quote(node_id)} [{', '.join(attributes)}];")
    for edge in sorted(lineage.edges, key=lambda e: (e.source, e.target)):
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} [label={_quote(edge.relation)}];")
    lines.append("}")
    return "\n".join(lines)
