"""apply_retention: the whole retention sequence, once, for RetentionOperator and the CLI's forget and gc verbs.

Forget by the keep rules, then gc with grace, never what a registered model version needs (protection
read from MLflow before anything is forgotten, and again right before gc deletes), then clear stale
predict staging; or with ``dry_run`` decide all of it and change nothing. No Airflow import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.retention.protection import protected_snapshots
from airflow_mlops.retention.rules import Decision, KeepRules, plan, render
from airflow_mlops.retention.staging import remove_stale_staging
from airflow_mlops.snapshots import DEFAULT_GC_GRACE_SECONDS, GcReport, SnapshotStore


@dataclass(frozen=True)
class RetentionReport:
    """What one application of retention decided and did (with ``dry_run``: would do) on the store ``store``.

    ``rules`` None: nothing was forgotten; ``gc`` None: no gc ran; ``kept_by_gc``: forgotten snapshots
    gc kept (and un-forgot) because a model needs them, with why. ``render`` is what the CLI prints
    and the operator logs, ``counts`` what the operator returns.
    """

    store: str
    dry_run: bool
    store_empty: bool = False
    rules: KeepRules | None = None
    decisions: tuple[Decision, ...] = ()
    gc: GcReport | None = None
    kept_by_gc: Mapping[str, str] = field(default_factory=dict)
    staging_removed: tuple[Path, ...] = ()

    def count(self, action: str) -> int:
        """How many decisions were ``action``: ``keep``, ``forget`` or ``unforget``."""
        return sum(1 for decision in self.decisions if decision.action == action)

    def summary(self) -> str:
        """One line: how many snapshots the rules kept, forgot and un-forgot."""
        counts = ", ".join(f"{action} {self.count(action)}" for action in ("keep", "forget", "unforget"))
        return f"forget: {counts}" + (" (dry run: nothing changed)" if self.dry_run else "")

    def counts(self) -> dict[str, Any]:
        """The numbers of the report, as plain values (RetentionOperator's XCom)."""
        gc = self.gc
        return {
            "kept": self.count("keep"),
            "forgotten": self.count("forget"),
            "unforgotten": self.count("unforget") + len(self.kept_by_gc),
            "deleted_snapshots": len(gc.deleted_snapshots) if gc else 0,
            "deleted_objects": gc.deleted_objects if gc else 0,
            "deleted_packs": gc.deleted_packs if gc else 0,
            "freed_bytes": gc.freed_bytes if gc else 0,
            "staging_removed": len(self.staging_removed),
            "dry_run": self.dry_run,
        }

    def render(self) -> str:
        """The decision table and its summary, what gc kept and deleted, the stale staging folders."""
        lines = []
        if self.store_empty:
            lines.append(f"no snapshot in {self.store} yet: nothing to forget or collect")
        elif self.rules is not None:
            lines += [render(self.decisions), self.summary()]
        lines += [f"{snapshot_id[:12]}  kept: {reason}" + ("" if self.dry_run else " (un-forgotten)")
                  for snapshot_id, reason in self.kept_by_gc.items()]
        if self.gc is not None:
            lines.append(self.gc.describe())
        lines += [f"stale predict-staging folder {folder}" + (" (dry run: left)" if self.dry_run else " removed")
                  for folder in self.staging_removed]
        return "\n".join(lines)


def apply_retention(
    store: SnapshotStore,
    open_client: Callable[[], AbstractContextManager[Any]],
    rules: KeepRules | None,
    *,
    collect_garbage: bool = True,
    grace_seconds: float | None = None,
    dry_run: bool = False,
    staging_dir: str | os.PathLike | None = None,
) -> RetentionReport:
    """Forget what no rule in ``rules`` keeps (None: forget nothing), then (``collect_garbage``) gc, then
    remove the stale folders under ``staging_dir`` (None: none); never what a registered model needs.

    ``open_client`` opens an MLflow client session; it is called only if the store holds snapshots
    (a new deployment has nothing to protect). ``grace_seconds`` None: the store's default.
    """
    decisions: tuple[Decision, ...] = ()
    gc, kept_by_gc = None, {}
    store_empty = not store.snapshot_ids()
    if not store_empty:
        with open_client() as client:
            if rules is not None:
                decisions = _forget(store, client, rules, dry_run)
            if collect_garbage:
                gc, kept_by_gc = _collect(store, client, grace_seconds, dry_run)
    staging = remove_stale_staging(staging_dir, dry_run=dry_run) if staging_dir is not None else []
    return RetentionReport(store.uri, dry_run, store_empty, rules, decisions, gc, kept_by_gc, tuple(staging))


def _forget(store: SnapshotStore, client: Any, rules: KeepRules, dry_run: bool) -> tuple[Decision, ...]:
    """Mark what no rule and no model keeps as forgotten, un-forget the protected; the decisions.

    Protection is computed first, from MLflow: if it cannot be read, nothing is forgotten.
    """
    decisions = plan(store.records(), rules, protected_snapshots(store, client), set(store.forgotten()))
    if not dry_run:
        doomed = [d.snapshot_id for d in decisions if d.action == "forget"]
        if doomed:
            store.forget(doomed, reason=f"no keep rule matches ({rules.describe()})")
        revived = [d.snapshot_id for d in decisions if d.action == "unforget"]
        if revived:
            store.unforget(revived)
    return tuple(decisions)


def _collect(store: SnapshotStore, client: Any, grace_seconds: float | None,
             dry_run: bool) -> tuple[GcReport, dict[str, str]]:
    """The store's gc with protection recomputed now (a model registered since the forget counts): its
    report, and why each forgotten snapshot a model needs was kept (and un-forgotten)."""
    protected = protected_snapshots(store, client)
    report = store.gc(protect=protected, dry_run=dry_run,
                      grace_seconds=DEFAULT_GC_GRACE_SECONDS if grace_seconds is None else grace_seconds)
    if report.kept_forgotten and not dry_run:
        store.unforget(report.kept_forgotten)
    return report, {sid: protected.get(sid, "protected") for sid in report.kept_forgotten}
