"""Promotion: the gate run on a registered version, manual promotion and rollback, each under the lock.

Every alias move happens inside :func:`~airflow_mlops.registry.locks.promotion_lock` (read champion →
score → decide → move aliases → append history), so concurrent promotions serialize and the champion
ends as the best version by the gate's rule whatever the interleaving.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.registry import history
from airflow_mlops.registry.evaluation import held_out_rows, load_model, score_all
from airflow_mlops.registry.gate import GateRule, decide, describe
from airflow_mlops.registry.locks import promotion_lock
from airflow_mlops.registry.registration import register, training_reference
from airflow_mlops.tracking.metrics import DEFAULT_METRIC
from airflow_mlops.tracking.tags import (
    CHALLENGER_SCORE_TAG,
    CHAMPION_SCORE_TAG,
    CHAMPION_VERSION_TAG,
    DECISION_TAG,
    EVALUATION_TAG,
    REASON_TAG,
    RULE_TAG,
)


@dataclass(frozen=True)
class Aliases:
    """The alias names the registry moves."""

    champion: str = "champion"
    challenger: str = "challenger"
    previous: str = "previous-champion"


def alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None when it is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _recorded(name: str, version: Any, aliases: list[str]) -> dict[str, Any]:
    """The result of a gate that already ran on this version (a retry after it finished)."""
    tags = version.tags

    def number(key: str) -> float | None:
        return float(tags[key]) if tags.get(key) not in (None, "") else None

    return {"name": name, "version": str(version.version), "decision": tags[DECISION_TAG], "aliases": aliases,
            "challenger_score": number(CHALLENGER_SCORE_TAG), "champion_score": number(CHAMPION_SCORE_TAG),
            "reason": tags.get(REASON_TAG, "")}


def register_and_gate(
    client: Any,
    name: str,
    training: Mapping[str, Any] | str,
    restore: Callable[[str], Path],
    *,
    rule: GateRule = GateRule(),
    aliases: Aliases = Aliases(),
    identity: Mapping[str, Any] | None = None,
    description: str | None = None,
    task_instance_url: str | None = None,
    lock_url: str | None = None,
    on_registered: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Register the training run's model (once) and run the gate on it; returns the operator's result.

    Idempotent: a retry finds the version made before and, if the gate already decided, returns that
    decision; if it died in between, it finishes the promotion.
    """
    with promotion_lock(name, lock_url):
        version, _ = register(client, name, training, identity=identity, description=description,
                              task_instance_url=task_instance_url)
        if on_registered is not None:
            on_registered(version)
        number = str(version.version)
        current = client.get_model_version(name, number)
        if DECISION_TAG in current.tags:
            return _recorded(name, current, list(current.aliases))

        run_id, _ = training_reference(training)
        rows = held_out_rows(client, run_id, restore)
        model, kind = load_model(f"models:/{name}/{number}")
        rule = replace(rule, metric=rule.metric or DEFAULT_METRIC[kind])
        challenger_scores = score_all(model, kind, rows, rule.metrics())
        champion_version = alias_version(client, name, aliases.champion)
        champion_scores = None
        if champion_version == number:  # an earlier attempt promoted it, then died before recording
            verdict_decision, reason = "champion", "already the champion (an earlier attempt promoted it)"
        else:
            if champion_version is not None:
                champion_model, champion_kind = load_model(f"models:/{name}/{champion_version}")
                champion_scores = score_all(champion_model, champion_kind, rows, rule.metrics())
            verdict = decide(rule, challenger_scores, champion_scores)
            verdict_decision, reason = verdict.decision, verdict.reason
            _move_aliases(client, name, number, champion_version, verdict_decision, aliases, reason, identity,
                          challenger_scores, champion_scores, rule.metric)

        challenger_score = challenger_scores[rule.metric]
        champion_score = champion_scores[rule.metric] if champion_scores else None
        for key, value in {
            CHALLENGER_SCORE_TAG: repr(challenger_score),
            CHAMPION_SCORE_TAG: repr(champion_score) if champion_score is not None else "",
            CHAMPION_VERSION_TAG: champion_version if champion_version != number else "",
            EVALUATION_TAG: json.dumps(rows.describe(), sort_keys=True),
            RULE_TAG: json.dumps(describe(rule), sort_keys=True),
            REASON_TAG: reason,
            DECISION_TAG: verdict_decision,  # last: its presence means the gate finished
        }.items():
            if value:
                client.set_model_version_tag(name, number, key, value)
        return {"name": name, "version": number, "decision": verdict_decision,
                "aliases": list(client.get_model_version(name, number).aliases),
                "challenger_score": challenger_score, "champion_score": champion_score, "reason": reason}


def _move_aliases(client: Any, name: str, version: str, champion: str | None, decision: str, aliases: Aliases,
                  reason: str, identity: Mapping[str, Any] | None, challenger_scores: dict[str, float],
                  champion_scores: dict[str, float] | None, metric: str) -> None:
    scores = {"metric": metric, "challenger": challenger_scores, "champion": champion_scores}
    if decision == "champion":
        client.set_registered_model_alias(name, aliases.champion, version)
        if champion is not None:
            client.set_registered_model_alias(name, aliases.previous, champion)
        if alias_version(client, name, aliases.challenger) == version:
            client.delete_registered_model_alias(name, aliases.challenger)
        _record(client, name, "gate", aliases.champion, champion, version, reason, identity, scores)
    elif decision == "challenger":
        previous_challenger = alias_version(client, name, aliases.challenger)
        client.set_registered_model_alias(name, aliases.challenger, version)
        _record(client, name, "gate", aliases.challenger, previous_challenger, version, reason, identity, scores)


def _record(client: Any, name: str, action: str, alias: str, from_version: str | None, to_version: str | None,
            reason: str, identity: Mapping[str, Any] | None, scores: dict[str, Any] | None = None) -> dict[str, Any]:
    entry = {"action": action, "alias": alias, "from_version": from_version, "to_version": to_version,
             "reason": reason, "by": history.actor(dict(identity) if identity else None)}
    if scores is not None:
        entry["scores"] = scores
    return history.append(client, name, entry)


def promote(client: Any, name: str, version: str, reason: str, *, aliases: Aliases = Aliases(),
            identity: Mapping[str, Any] | None = None, lock_url: str | None = None) -> dict[str, Any]:
    """Make ``version`` the champion by hand (the old one becomes previous-champion); returns the history entry."""
    if not reason:
        raise MlopsError("give a --reason: the promotion history records why")
    version = str(version)
    with promotion_lock(name, lock_url):
        client.get_model_version(name, version)  # fails clearly on an unknown version
        champion = alias_version(client, name, aliases.champion)
        if champion == version:
            raise MlopsError(f"version {version} of {name} is already the {aliases.champion}")
        client.set_registered_model_alias(name, aliases.champion, version)
        if champion is not None:
            client.set_registered_model_alias(name, aliases.previous, champion)
        return _record(client, name, "promote", aliases.champion, champion, version, reason, identity)


def rollback(client: Any, name: str, reason: str, *, aliases: Aliases = Aliases(),
             identity: Mapping[str, Any] | None = None, lock_url: str | None = None) -> dict[str, Any]:
    """Champion back to previous-champion (that alias is then cleared); returns the history entry."""
    if not reason:
        raise MlopsError("give a --reason: the promotion history records why")
    with promotion_lock(name, lock_url):
        previous = alias_version(client, name, aliases.previous)
        if previous is None:
            raise MlopsError(f"{name} has no {aliases.previous!r} alias to roll back to")
        champion = alias_version(client, name, aliases.champion)
        client.set_registered_model_alias(name, aliases.champion, previous)
        client.delete_registered_model_alias(name, aliases.previous)
        return _record(client, name, "rollback", aliases.champion, champion, previous, reason, identity)
