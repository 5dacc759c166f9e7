"""What one training asks for, in plain values: what data preparation, training, tuning and reproduce
all read, so it sits below each of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.tracking.environment import CodeVersion
from airflow_mlops.tracking.estimators import describe_estimator
from airflow_mlops.tracking.runs import fingerprint


@dataclass
class TrainingRequest:
    """Everything one training needs, in plain values."""

    data_path: Path
    snapshot_id: str
    snapshot_uri: str
    target: str | None
    hyperparams: dict[str, Any] = field(default_factory=dict)
    features: list[str] | None = None
    estimator: Any = None  # an sklearn estimator or Pipeline, or a dotted class path
    train_fn: Callable[..., Any] | None = None  # (train_frame, hyperparams) -> model | (model, metrics)
    seed: int = 42
    test_size: float = 0.2
    identity: dict[str, Any] = field(default_factory=dict)
    code: CodeVersion = field(default_factory=CodeVersion)
    run_name: str | None = None
    task_instance_url: str | None = None  # the Airflow UI page of the task instance; not part of the fingerprint

    def definition(self) -> dict[str, Any]:
        """What determines the model, besides the hyperparams: data, estimator or function, split, code."""
        return {
            "snapshot_id": self.snapshot_id,
            "estimator": describe_estimator(self.estimator),
            "train_fn": qualified_name(self.train_fn),
            "features": self.features,
            "target": self.target,
            "seed": self.seed,
            "test_size": self.test_size,
            "code": {name: value for name, value in self.code.tags.items() if name.endswith("_digest")},
        }

    def run_definition(self) -> dict[str, Any]:
        """What a training run's fingerprint digests and its ``definition/request.json`` records."""
        return {**self.definition(), "hyperparams": self.hyperparams}

    def fingerprint(self) -> str:
        return fingerprint(self.run_definition())


def qualified_name(function: Callable[..., Any] | None) -> str | None:
    return f"{function.__module__}.{function.__qualname__}" if function is not None else None
