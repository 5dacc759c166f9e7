"""Promotion history, kept with the registered model: one tag per alias move.

``airflow_mlops.promotion.<seq>`` (zero-padded, so names sort in order) holds a small JSON entry: who
(task instance or CLI user), when, which alias moved from which version to which, why, and scores.
Tags live and die with the registered model and need no store of their own; appends happen under the
promotion lock, so sequence numbers never collide.
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone
from typing import Any

from airflow_mlops.tracking.tags import PROMOTION_HISTORY_PREFIX
_WIDTH = 6


def history(client: Any, name: str) -> list[dict[str, Any]]:
    """Every entry of ``name``'s promotion history, oldest first."""
    tags = client.get_registered_model(name).tags
    return [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(PROMOTION_HISTORY_PREFIX))]


def append(client: Any, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Add an entry (call under the promotion lock); ``seq`` and ``at`` are filled in. Returns it."""
    tags = client.get_registered_model(name).tags
    seqs = (int(k[len(PROMOTION_HISTORY_PREFIX):]) for k in tags if k.startswith(PROMOTION_HISTORY_PREFIX))
    seq = 1 + max(seqs, default=0)
    full = {"seq": seq, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **entry}
    client.set_registered_model_tag(name, f"{PROMOTION_HISTORY_PREFIX}{seq:0{_WIDTH}d}", json.dumps(full, sort_keys=True))
    return full


def actor(identity: dict[str, Any] | None) -> str:
    """Who moved the alias: ``dag_id/run_id/task_id#try`` for a task, ``cli:<user>`` otherwise."""
    if identity:
        return f"{identity['dag_id']}/{identity['run_id']}/{identity['task_id']}#{identity.get('try_number')}"
    return f"cli:{getpass.getuser()}"
