"""The gate's rule: is a challenger good enough to replace the champion (or to be the first one)?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.errors import InputError
from airflow_mlops.tracking.metrics import CLASSIFIER_METRICS, REGRESSOR_METRICS
from airflow_mlops.tracking.metrics import direction as metric_direction


@dataclass(frozen=True)
class GateRule:
    """How a challenger must compare with the champion, both scored on the challenger's held-out rows.

    :param metric: the deciding metric (a :mod:`~airflow_mlops.tracking.metrics` name); by default
        ``roc_auc`` for classifiers, ``root_mean_squared_error`` for regressors.
    :param direction: ``maximize``/``minimize``; by default the metric's own.
    :param min_improvement: how much better the challenger must be; strictly better when 0.
    :param relative: ``min_improvement`` is a fraction of the champion's score, not an absolute amount.
    :param floor: an absolute bound the challenger must reach (at least, or at most when minimizing).
    :param guard_metrics: other metric → tolerance: how much worse than the champion it may get.
    """

    metric: str | None = None
    direction: str | None = None
    min_improvement: float = 0.0
    relative: bool = False
    floor: float | None = None
    guard_metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a rule that could only fail after the version is registered."""
        known = set(CLASSIFIER_METRICS) | set(REGRESSOR_METRICS)
        unknown = [m for m in [self.metric, *self.guard_metrics] if m is not None and m not in known]
        if unknown:
            raise InputError(f"gate metrics {unknown} are not among {', '.join(sorted(known))}")
        if self.direction not in (None, "maximize", "minimize"):
            raise InputError(f"gate direction must be 'maximize' or 'minimize', not {self.direction!r}")
        if self.min_improvement < 0 or any(tolerance < 0 for tolerance in self.guard_metrics.values()):
            raise InputError("min_improvement and guard metric tolerances must be 0 or more")

    def resolved_direction(self, metric: str | None = None) -> str:
        name = metric or self.metric
        found = (self.direction if metric is None else None) or metric_direction(name)
        if found not in ("maximize", "minimize"):
            raise InputError(f"metric {name!r}: give direction='maximize' or 'minimize'")
        return found

    def metrics(self) -> list[str]:
        return [self.metric, *[m for m in self.guard_metrics if m != self.metric]]


@dataclass(frozen=True)
class Verdict:
    decision: str  # "champion" (promote), "challenger" (keep the champion), "rejected" (below the floor)
    reason: str


def _gain(rule_direction: str, challenger: float, champion: float) -> float:
    """How much better the challenger is (negative when worse)."""
    return challenger - champion if rule_direction == "maximize" else champion - challenger


def decide(rule: GateRule, challenger: dict[str, float], champion: dict[str, float] | None) -> Verdict:
    """The gate's decision from both models' scores on the same rows (``champion`` None: there is none)."""
    way = rule.resolved_direction()
    value = challenger[rule.metric]
    if rule.floor is not None and _gain(way, value, rule.floor) < 0:
        bound = "at least" if way == "maximize" else "at most"
        return Verdict("rejected", f"{rule.metric} {value:.6g} misses the floor: must be {bound} {rule.floor:.6g}")
    if champion is None:
        return Verdict("champion", f"first acceptable version: {rule.metric} {value:.6g}")
    gain = _gain(way, value, champion[rule.metric])
    needed = rule.min_improvement * abs(champion[rule.metric]) if rule.relative else rule.min_improvement
    if gain <= 0 or gain < needed:
        return Verdict("challenger", f"{rule.metric} {value:.6g} vs champion {champion[rule.metric]:.6g}: "
                                     f"improvement {gain:.6g} is not above the required {needed:.6g}")
    for metric, tolerance in rule.guard_metrics.items():
        loss = -_gain(rule.resolved_direction(metric), challenger[metric], champion[metric])
        if loss > tolerance:
            return Verdict("challenger", f"{metric} gets worse by {loss:.6g}, more than the tolerated {tolerance:.6g}")
    return Verdict("champion", f"{rule.metric} {value:.6g} beats champion {champion[rule.metric]:.6g} by {gain:.6g}")


def describe(rule: GateRule) -> dict[str, Any]:
    return {"metric": rule.metric, "direction": rule.resolved_direction(), "min_improvement": rule.min_improvement,
            "relative": rule.relative, "floor": rule.floor, "guard_metrics": dict(rule.guard_metrics)}
