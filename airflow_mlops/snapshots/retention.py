"""Retention: restic-style keep rules that forget old snapshots, and never one a registered model needs.

``forget`` marks snapshots as forgotten (the store's ``forgotten/<id>`` markers); ``collect`` then has
the store delete forgotten snapshots and the objects no kept snapshot uses. Both first compute the
protected set through lineage: every snapshot upstream of any registered model version, whatever its
aliases (an archived version can still be rolled back to, or reproduced) — the version's training
snapshot, that snapshot's ancestors (ETL parents, and whatever those were derived or scored from),
and the inputs of the tuning run of the same Airflow DAG run. Snapshots a version wrote
(predictions) are not needed by it and follow the keep rules like any other. No Airflow import.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import defaultdict, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.snapshots.store import SnapshotRecord, SnapshotStore

if TYPE_CHECKING:
    from airflow_mlops.snapshots import GcReport

#: Age after which a predict-staging folder belongs to a prediction that was killed.
STAGING_MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class KeepRules:
    """How many snapshots each group keeps: the N newest, the newest of each of the N newest days, weeks.

    0 means "rule not given"; at least one rule must be above 0, and none below.
    """

    last: int = 0
    daily: int = 0
    weekly: int = 0

    def __post_init__(self) -> None:
        for name, value in self._named():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MlopsError(f"--{name} must be a whole number of at least 0, got {value!r}")
        if not any(value for _name, value in self._named()):
            raise MlopsError("no keep rule: give at least one of --keep-last, --keep-daily, --keep-weekly above 0")

    @classmethod
    def parse(cls, last: Any = 0, daily: Any = 0, weekly: Any = 0) -> KeepRules:
        """Rules from numbers or their text (what a template such as ``{{ params.keep_last }}`` renders);
        anything else is left for the checks of ``__post_init__`` to refuse by name."""

        def number(value: Any) -> Any:
            if value is None:
                return 0
            text = str(value).strip()
            return int(text) if isinstance(value, (str, int)) and text.lstrip("-").isdigit() else value

        return cls(number(last), number(daily), number(weekly))

    def _named(self) -> list[tuple[str, int]]:
        return [("keep-last", self.last), ("keep-daily", self.daily), ("keep-weekly", self.weekly)]

    def describe(self) -> str:
        return " ".join(f"--{name} {value}" for name, value in self._named() if value)


@dataclass(frozen=True)
class Decision:
    """What happens to one snapshot, and why: ``keep``, ``forget`` or ``unforget`` (forgotten, now protected)."""

    snapshot_id: str
    created: str
    groups: tuple[str, ...]
    action: str
    reason: str


def group_of(record: SnapshotRecord) -> str:
    """The group keep rules count within: the record's ``dag_id/task_id`` (``[map_index]``), else its source."""
    airflow = record.airflow or {}
    if airflow.get("dag_id") and airflow.get("task_id"):
        index = airflow.get("map_index")
        return f"{airflow['dag_id']}/{airflow['task_id']}" + (f"[{index}]" if index not in (None, -1) else "")
    return record.source


def _utc(created: str) -> datetime:
    return datetime.fromisoformat(created).astimezone(timezone.utc)


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")


def _week(when: datetime) -> str:
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def _rule_reasons(entries: list[tuple[str, str]], rules: KeepRules) -> dict[str, list[str]]:
    """snapshot id -> the rules keeping it, for one group's (id, created) entries, newest first.

    As restic: keep-last keeps the N newest; keep-daily/weekly keep the newest snapshot of each of the
    N newest days/ISO weeks that have one.
    """
    kept: dict[str, list[str]] = defaultdict(list)
    for snapshot_id, _created in entries[: rules.last]:
        kept[snapshot_id].append(f"keep-last {rules.last}")
    for name, count, bucket_of in (("keep-daily", rules.daily, _day), ("keep-weekly", rules.weekly, _week)):
        buckets: list[str] = []
        for snapshot_id, created in entries:
            bucket = bucket_of(_utc(created))
            if bucket in buckets:
                continue  # newest first: the first snapshot seen in a bucket is its newest
            if len(buckets) == count:
                break
            buckets.append(bucket)
            kept[snapshot_id].append(f"{name} {bucket}")
    return kept


def plan(
    records: Iterable[SnapshotRecord],
    rules: KeepRules,
    protected: Mapping[str, str],
    forgotten: Collection[str] = (),
) -> list[Decision]:
    """The decision for every snapshot not yet forgotten (and each forgotten one that is now protected).

    Rules count within each group (:func:`group_of`), over distinct snapshots: one taken again with the
    same bytes counts once, at its newest time. A snapshot is kept if any rule in any of its groups, or
    protection, keeps it. Newest first.
    """
    newest: dict[str, str] = {}
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for record in records:
        sid = record.snapshot_id
        newest[sid] = max(newest.get(sid, ""), record.created)
        if sid not in forgotten:
            group = groups[group_of(record)]
            group[sid] = max(group.get(sid, ""), record.created)
    reasons: dict[str, list[str]] = defaultdict(list)
    member_of: dict[str, list[str]] = defaultdict(list)
    for name, members in sorted(groups.items()):
        entries = sorted(members.items(), key=lambda item: (item[1], item[0]), reverse=True)
        for sid, kept in _rule_reasons(entries, rules).items():
            reasons[sid] += kept
        for sid in members:
            member_of[sid].append(name)
    decisions = []
    for sid, created in sorted(newest.items(), key=lambda item: (item[1], item[0]), reverse=True):
        why = ([protected[sid]] if sid in protected else []) + reasons[sid]
        if sid in forgotten:
            if sid in protected:
                decisions.append(Decision(sid, created, tuple(member_of[sid]), "unforget", protected[sid]))
            continue
        action = "keep" if why else "forget"
        decisions.append(Decision(sid, created, tuple(member_of[sid]), action, "; ".join(why) or "no keep rule matches"))
    return decisions


# ----------------------------------------------------------------- protection through lineage


def protected_snapshots(store: SnapshotStore, client: Any) -> dict[str, str]:
    """snapshot id -> why a registered model version needs it, for every version of every registered model
    (the snapshots of this store: one MLflow server may serve models trained on several stores).

    Walks upstream from each version with the lineage walker (the version's run, its input snapshot,
    their parents, ...), adding the version's own snapshot tag (should its run be gone) and the inputs
    of the tuning run of the training run's Airflow DAG run (MLflow links the two no other way).
    """
    from airflow_mlops.lineage.graph import LineageWalker, all_pages

    walker = LineageWalker(store, client)
    versions = sorted(all_pages(client.search_model_versions), key=lambda v: (v.name, int(v.version)))
    reasons: dict[str, str] = {}
    for version in versions:
        for snapshot_id, reason in _needed_by(walker, f"model_version:{version.name}/{version.version}"):
            reasons.setdefault(snapshot_id, reason)
    return reasons


def _needed_by(walker: Any, version_node: str) -> list[tuple[str, str]]:
    """(snapshot id, reason) for every snapshot upstream of one model version, nearest first."""
    from airflow_mlops.lineage.graph import SNAPSHOT

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


def _upstream(walker: Any, node_id: str, version_node: str, training: set[str]) -> list[tuple[str, str]]:
    """The walker's upstream step (only ancestors are read), plus a version's snapshot tag and its
    training run's tuning runs."""
    from airflow_mlops.lineage.graph import RUN, SNAPSHOT

    found = list(walker.upstream(node_id))
    data = walker.node(node_id).data
    if node_id == version_node and data.get("snapshot_id"):
        found.append((f"{SNAPSHOT}:{data['snapshot_id']}", "input"))
    if node_id in training:
        found += [(f"{RUN}:{run_id}", "tuned") for run_id in _tuning_runs(walker.client, data)]
    return found


def _tuning_runs(client: Any, training: Mapping[str, Any]) -> list[str]:
    """Ids of the tuning (parent) runs in the training run's experiment and Airflow DAG run."""
    from airflow_mlops.tracking.runs import airflow_tags_filter
    from airflow_mlops.tuning.trial_runs import PARENT_RUN_TAG, STUDY_TAG

    airflow = training.get("airflow") or {}
    if training.get("missing") or not (airflow.get("dag_id") and airflow.get("run_id")):
        return []
    runs = client.search_runs([training["experiment_id"]], filter_string=airflow_tags_filter(airflow, ("dag_id", "run_id")),
                              max_results=1000)
    return [run.info.run_id for run in runs if STUDY_TAG in run.data.tags and PARENT_RUN_TAG not in run.data.tags]


def _reason(walker: Any, producer: str, relation: str, label: str, direct: set[str]) -> str:
    """Why a snapshot reached from ``producer`` by ``relation`` is needed by the model ``label``."""
    kind, _, key = producer.partition(":")
    if relation == "derived":
        return f"parent of {key[:12]} ({label})"
    if relation == "input" and producer in direct:
        return f"{label} trains on it"
    what = f"{walker.node(producer).data.get('type')} run" if kind == "run" else kind.replace("_", " ")
    return f"input of {what} {key[:12]} ({label})"


# ----------------------------------------------------------------- the verbs


@dataclass(frozen=True)
class ForgetResult:
    decisions: list[Decision]
    dry_run: bool

    def count(self, action: str) -> int:
        return sum(1 for decision in self.decisions if decision.action == action)

    def summary(self) -> str:
        counts = ", ".join(f"{action} {self.count(action)}" for action in ("keep", "forget", "unforget"))
        return f"forget: {counts}" + (" (dry run: nothing changed)" if self.dry_run else "")


def forget(store: SnapshotStore, client: Any, rules: KeepRules, *, dry_run: bool = False) -> ForgetResult:
    """Apply ``rules`` to the store: mark what no rule and no model keeps as forgotten, un-forget the protected.

    Protection is computed first, from MLflow: if it cannot be read, nothing is forgotten.
    """
    records = store.records()
    forgotten = set(store.forgotten())
    decisions = plan(records, rules, protected_snapshots(store, client), forgotten)
    if not dry_run:
        doomed = [d.snapshot_id for d in decisions if d.action == "forget"]
        if doomed:
            store.forget(doomed, reason=f"no keep rule matches ({rules.describe()})")
        revived = [d.snapshot_id for d in decisions if d.action == "unforget"]
        if revived:
            store.unforget(revived)
    return ForgetResult(decisions, dry_run)


def collect(store: SnapshotStore, client: Any, *, grace_seconds: float | None = None,
            dry_run: bool = False) -> tuple[GcReport, dict[str, str]]:
    """The store's gc with protection recomputed now (a model registered since ``forget`` counts).

    Returns the store's report and, for each forgotten snapshot kept because a model needs it (and
    un-forgotten), the reason.
    """
    from airflow_mlops.snapshots import DEFAULT_GC_GRACE_S

    protected = protected_snapshots(store, client)
    report = store.gc(protect=protected, dry_run=dry_run,
                      grace_seconds=DEFAULT_GC_GRACE_S if grace_seconds is None else grace_seconds)
    if report.kept_forgotten and not dry_run:
        store.unforget(report.kept_forgotten)
    return report, {sid: protected.get(sid, "protected") for sid in report.kept_forgotten}


def render(decisions: Iterable[Decision]) -> str:
    """The decision table: action, snapshot, created (UTC), group(s), reason; one line per snapshot."""
    rows = [("ACTION", "SNAPSHOT", "CREATED", "GROUP", "REASON")]
    rows += [(d.action, d.snapshot_id[:12], _utc(d.created).strftime("%Y-%m-%d %H:%M:%S"), ", ".join(d.groups) or "-",
              d.reason) for d in decisions]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows)


# ----------------------------------------------------------------- predict staging


def stale_staging(root: str | os.PathLike, *, max_age_s: float = STAGING_MAX_AGE_S, now: float | None = None) -> list[Path]:
    """Folders under ``root`` in which nothing changed for ``max_age_s``: left by killed batch predictions."""
    root = Path(root)
    if not root.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - max_age_s
    return sorted(folder for folder in root.iterdir() if folder.is_dir() and _newest_mtime(folder) < cutoff)


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return newest


def remove_stale_staging(root: str | os.PathLike, *, max_age_s: float = STAGING_MAX_AGE_S,
                         dry_run: bool = False) -> list[Path]:
    """Remove (unless ``dry_run``) and return the stale folders under ``root``."""
    stale = stale_staging(root, max_age_s=max_age_s)
    if not dry_run:
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
    return stale
