"""What a reproduction found: each recorded value beside the reproduced one, and what differed around them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    """One compared value: a metric (or, for a snapshot, its id or one output file)."""

    name: str
    recorded: float | str | None  # None: not there
    reproduced: float | str | None
    difference: float | None  # reproduced - recorded, for numbers
    ok: bool


def compare_metrics(recorded: Mapping[str, float], reproduced: Mapping[str, float], tolerance: float) -> list[Row]:
    """A row per metric either side has: equal within ``tolerance`` (NaN equals NaN); missing on one side differs."""
    rows = []
    for name in sorted(set(recorded) | set(reproduced)):
        before, after = recorded.get(name), reproduced.get(name)
        if before is None or after is None:
            rows.append(Row(name, before, after, None, False))
            continue
        difference = after - before
        both_nan = math.isnan(before) and math.isnan(after)
        rows.append(Row(name, before, after, None if math.isnan(difference) else difference,
                        both_nan or abs(difference) <= tolerance))
    return rows


def _text(value: float | str | None) -> str:
    if value is None:
        return "-"
    return repr(value) if isinstance(value, float) else str(value)  # repr: the shortest text that is the exact float


@dataclass
class ReproductionReport:
    """The outcome of ``airflow-mlops reproduce``: ``ok`` when every row matches.

    ``environment`` lists package and Python version differences between the record and now (None: the
    record has no environment); ``code`` the recorded source files that differ from the present ones
    (only when reproducing was allowed despite them).
    """

    reference: str  # the run or snapshot reproduced
    kind: str  # "training run", "tuning trial" or "ETL snapshot"
    reproduction: str | None  # the new run, or the new snapshot
    tolerance: float
    rows: list[Row] = field(default_factory=list)
    environment: list[str] | None = None
    code: list[str] = field(default_factory=list)
    label: str = "metric"  # what the rows are

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        """The report as text: a table of the rows, then code and environment differences, then the verdict."""
        lines = [f"reproduced {self.kind} {self.reference} as {self.reproduction} (tolerance {self.tolerance:g})"]
        table = [(self.label, "recorded", "reproduced", "difference", "")] + [
            (row.name, _text(row.recorded), _text(row.reproduced),
             "-" if row.difference is None else f"{row.difference:+.3g}", "ok" if row.ok else "DIFFERS")
            for row in self.rows
        ]
        widths = [max(len(cells[i]) for cells in table) for i in range(4)]
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  " + cells[4] for cells in table]
        if self.code:
            lines.append("code that differs from the record (reproduced anyway):")
            lines += [f"  {difference}" for difference in self.code]
        if self.environment is None:
            lines.append("environment: not recorded")
        else:
            lines.append("environment differences:" if self.environment else "environment: same packages and Python")
            lines += [f"  {difference}" for difference in self.environment]
        differing = sum(not row.ok for row in self.rows)
        lines.append(f"result: reproduced, {len(self.rows)} of {len(self.rows)} values match" if self.ok
                     else f"result: NOT reproduced, {differing} of {len(self.rows)} values differ")
        return "\n".join(line.rstrip() for line in lines)
