"""What a tuning task asks for, checked whole before a study exists: counts, metric and direction,
how trials are validated, sampler and pruner. The operator passes raw (templated) values in."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.errors import InputError
from airflow_mlops.tracking.data import PreparedData
from airflow_mlops.tracking.estimators import build_estimator
from airflow_mlops.tracking.metrics import DEFAULT_METRIC, check_metric
from airflow_mlops.tracking.metrics import direction as metric_direction
from airflow_mlops.tracking.request import TrainingRequest, qualified_name
from airflow_mlops.tracking.runs import fingerprint
from airflow_mlops.tuning.space import Dimension, parse_search_space
from airflow_mlops.utils.templated import as_int

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "qmc": "QMCSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "successive_halving": "SuccessiveHalvingPruner",
           "none": "NopPruner"}
_MAX_STUDY_NAME = 512  # Optuna's RDB storage limit


@dataclass(frozen=True)
class Validation:
    """How a trial is scored without the held-out test split: k-fold cross-validation on the training
    part (stratified for classifiers), or one validation split carved from it (``holdout``)."""

    folds: int = 5
    holdout: float | None = None

    def splits(self, X: Any, y: Any, model_type: str | None, seed: int) -> list[tuple[Any, Any]]:
        """(fit rows, validation rows) positions within the training part, seeded."""
        from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

        stratified = model_type == "classifier" and y.value_counts().min() >= (2 if self.holdout else self.folds)
        if self.holdout is not None:
            positions = list(range(len(X)))
            fit, valid = train_test_split(positions, test_size=self.holdout, random_state=seed,
                                          stratify=y if stratified else None)
            return [(fit, valid)]
        if len(X) < self.folds:
            raise InputError(f"cv={self.folds} needs at least {self.folds} training rows, the training part has "
                             f"{len(X)}: give fewer folds, validation_size, or more data")
        splitter = (StratifiedKFold if stratified else KFold)(n_splits=self.folds, shuffle=True, random_state=seed)
        return list(splitter.split(X, y))

    def describe(self, model_type: str | None) -> str:
        if self.holdout is not None:
            return f"validation split of {self.holdout:g} of the training part"
        kind = "stratified " if model_type == "classifier" else ""
        return f"{self.folds}-fold {kind}cross-validation on the training part"


@dataclass
class TuningRequest:
    training: TrainingRequest
    n_trials: int
    metric: str
    direction: str
    space: list[Dimension] = field(default_factory=list)
    objective: Callable[[Any, PreparedData], float] | None = None  # (trial, training part) -> value
    validation: Validation = field(default_factory=Validation)
    n_jobs: int = 1
    timeout_seconds: float | None = None
    sampler: Any = None
    pruner: Any = None
    storage_description: str = ""
    shared_study_name: str | None = None  # a study several task instances share (Optuna's distributed mode)

    def definition(self) -> dict[str, Any]:
        """What the study's fingerprint digests and its parent run's ``definition/request.json`` records."""
        return {
            **self.training.definition(), "space": [d.__dict__ for d in self.space],
            "objective": qualified_name(self.objective), "metric": self.metric, "direction": self.direction,
            "validation": self.validation.__dict__,
        }

    def fingerprint(self) -> str:
        """Same data, search space, objective and scoring: the study can be resumed; else it is another study."""
        return fingerprint(self.definition())

    @property
    def shared(self) -> bool:
        """Whether other task instances may run trials of this study."""
        return self.shared_study_name is not None

    @property
    def study_name(self) -> str:
        """The shared study's name if given; else ``dag_id.task_id.run_id[.map_index].<fingerprint>``, which
        every attempt of the task instance on the same inputs shares."""
        if self.shared_study_name is not None:
            return self.shared_study_name
        identity = self.training.identity
        name = f"{identity['dag_id']}.{identity['task_id']}.{identity['run_id']}"
        if identity.get("map_index") not in (None, -1):
            name += f".{identity['map_index']}"
        return f"{name}.{self.fingerprint()[:12]}"


def checked_space(search_space: Any, objective: Any, estimator: Any, seed: int) -> list[Dimension]:
    """The search space's dimensions, checked against the estimator's parameters; [] for an objective."""
    if (search_space is None) == (objective is None):
        raise InputError("give either search_space (with estimator) or objective")
    if search_space is None:
        return []
    if estimator is None:
        raise InputError("search_space needs an estimator to tune")
    return parse_search_space(search_space, build_estimator(estimator, {}, seed).get_params(deep=True))


def tuning_request(
    training: TrainingRequest,
    data: PreparedData,
    *,
    n_trials: Any,
    space: list[Dimension],
    objective: Callable[..., float] | None,
    metric: str | None,
    direction: str | None,
    cv: Any = 5,
    validation_size: float | None = None,
    n_jobs: Any = 1,
    timeout_seconds: float | None = None,
    sampler: Any = "tpe",
    pruner: Any = None,
    study_name: Any = None,
) -> TuningRequest:
    """A checked request: defaults resolved (metric by model type, direction by metric), every bad value refused."""
    chosen_metric = metric or (DEFAULT_METRIC.get(data.model_type) if data.model_type else None)
    if chosen_metric is None:
        raise InputError("give metric: the name of the value the objective returns")
    if objective is None:
        check_metric(chosen_metric, data.model_type)
    chosen_direction = direction or metric_direction(chosen_metric)
    if chosen_direction is None:
        raise InputError(f"give direction (maximize or minimize) for metric {chosen_metric!r}")
    if chosen_direction not in ("maximize", "minimize"):
        raise InputError(f"direction must be maximize or minimize, got {chosen_direction!r}")
    if validation_size is not None and not 0 < float(validation_size) < 1:
        raise InputError(f"validation_size must be between 0 and 1, got {validation_size}")
    folds = positive_int(cv, "cv")
    if validation_size is None and folds < 2:
        raise InputError(f"cv needs at least 2 folds, got {cv}")
    return TuningRequest(
        training=training, n_trials=positive_int(n_trials, "n_trials"), metric=chosen_metric,
        direction=chosen_direction, space=space, objective=objective,
        validation=Validation(folds, float(validation_size) if validation_size is not None else None),
        n_jobs=positive_int(n_jobs, "n_jobs"), timeout_seconds=timeout_seconds,
        sampler=_build(sampler, SAMPLERS, "optuna.samplers", seed=training.seed),
        # None means no pruning (Optuna's own default would be the median pruner)
        pruner=_build(pruner if pruner is not None else "none", PRUNERS, "optuna.pruners"),
        shared_study_name=_shared_study_name(study_name),
    )


def _shared_study_name(name: Any) -> str | None:
    """The study name a task was given (None or a template rendered empty: a study of its own)."""
    if name is None or (isinstance(name, str) and not name.strip()):
        return None
    if not isinstance(name, str) or len(name.strip()) > _MAX_STUDY_NAME:
        raise InputError(f"study_name must be text of at most {_MAX_STUDY_NAME} characters, got {str(name)[:80]!r}")
    return name.strip()


def positive_int(value: Any, name: str) -> int:
    """A whole number of at least 1, given as a number or its rendered template text (``as_int``)."""
    try:
        number = as_int(value, name)
    except InputError:
        number = 0
    if number < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return number


def _build(choice: Any, names: dict[str, str], module: str, **options: Any) -> Any:
    """A sampler or pruner from its short name (with ``options``), or the instance given."""
    if not isinstance(choice, str):
        return choice
    if choice not in names:
        raise InputError(f"unknown {module.rsplit('.', 1)[1][:-1]} {choice!r}; choose from {', '.join(names)}")
    return getattr(importlib.import_module(module), names[choice])(**options)
