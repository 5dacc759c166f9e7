"""Keep rules, restic's: which snapshots each group keeps, and the decision for every snapshot, with its reason.

Pure over snapshot records and a given protected set (what registered models need,
:mod:`airflow_mlops.retention.protection`): nothing here reads MLflow or changes a store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_mlops.errors import InputError
from airflow_mlops.snapshots import SnapshotRecord
from airflow_mlops.utils.templated import as_int


#: How the CLI names a keep rule (``--keep-last``); also how a forget record's reason states the rules.
CLI_SPELLING = "--keep-{}"


@dataclass(frozen=True)
class KeepRules:
    """How many snapshots each group keeps: the N newest, the newest of each of the N newest days, weeks.

    0 means "rule not given"; at least one rule must be above 0, and none below. ``spelling`` is how an
    error names a rule to its caller: the CLI's ``--keep-last`` (CLI_SPELLING) by default, ``keep_{}`` from an operator.
    """

    last: int = 0
    daily: int = 0
    weekly: int = 0
    spelling: str = field(default=CLI_SPELLING, compare=False, repr=False)

    def __post_init__(self) -> None:
        for rule, value in self._rules():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{self.spelling.format(rule)} must be a whole number of at least 0, got {value!r}")
        if not any(value for _rule, value in self._rules()):
            named = ", ".join(self.spelling.format(rule) for rule, _value in self._rules())
            raise InputError(f"no keep rule: give at least one of {named} above 0")

    @classmethod
    def parse(cls, last: Any = 0, daily: Any = 0, weekly: Any = 0, *, spelling: str = CLI_SPELLING) -> KeepRules:
        """Rules from numbers or their text (what a template such as ``{{ params.keep_last }}`` renders);
        None is "not given"."""
        values = {rule: 0 if value is None else as_int(value, spelling.format(rule))
                  for rule, value in (("last", last), ("daily", daily), ("weekly", weekly))}
        return cls(**values, spelling=spelling)

    def _rules(self) -> list[tuple[str, int]]:
        return [("last", self.last), ("daily", self.daily), ("weekly", self.weekly)]

    def describe(self) -> str:
        """The rules as the CLI spells them (what a forget record's reason says, whoever forgot)."""
        return " ".join(f"{CLI_SPELLING.format(rule)} {value}" for rule, value in self._rules() if value)


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


def render(decisions: Iterable[Decision]) -> str:
    """The decision table: action, snapshot, created (UTC), group(s), reason; one line per snapshot."""
    rows = [("ACTION", "SNAPSHOT", "CREATED", "GROUP", "REASON")]
    rows += [(d.action, d.snapshot_id[:12], _utc(d.created).strftime("%Y-%m-%d %H:%M:%S"), ", ".join(d.groups) or "-",
              d.reason) for d in decisions]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows)


