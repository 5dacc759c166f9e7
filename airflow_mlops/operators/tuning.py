"""OptunaTuneOperator: a hyperparameter search that survives worker crashes and retries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_mlops.errors import MlopsError
from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.optuna import OptunaStorageHook
from airflow_mlops.links.mlflow import MlflowRunLink
from airflow_mlops.operators._base import SnapshotModelOperator

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "qmc": "QMCSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "successive_halving": "SuccessiveHalvingPruner"}


class OptunaTuneOperator(SnapshotModelOperator):
    """Search hyperparameters with Optuna on a data snapshot; resumes its study on retry.

    The study is stored in a database (``optuna_conn_id``: PostgreSQL in production, embedded SQLite
    by default) under a name derived from dag_id, task_id, run_id and map_index, so a retry loads it
    and runs only the missing trials: ``n_trials`` is the total for the task instance. Trials left
    RUNNING by a killed attempt are failed and re-queued through Optuna's heartbeat. A trial that
    raises is recorded as FAIL and replaced; the study stops only when every trial of a batch fails.

    Each trial trains through the same path as :class:`MLflowTrainOperator` (same data handling, same
    metric definitions as ``mlflow.models.evaluate``), so values are comparable with trained runs.
    MLflow gets one parent run per study (best params and value, optimization-history and
    param-importance plots, study name and storage without credentials as tags) and one nested run
    per trial (params, value, state, duration). Common parameters are described on
    :class:`~airflow_mlops.operators._base.SnapshotModelOperator`.

    :param n_trials: finished trials the study must have (COMPLETE or PRUNED) (templated).
    :param search_space: ``{"name": {"type": "float"|"int"|"categorical", ...}}`` or its JSON text
        (templated), for ``estimator``; checked whole before any trial.
    :param objective: callable or dotted path ``objective(trial, data) -> float``, for full control;
        ``data`` has ``frame``, ``X_train``, ``X_test``, ``y_train``, ``y_test``.
    :param metric: metric to optimize (templated); default ``roc_auc`` for classifiers,
        ``root_mean_squared_error`` for regressors; the name of an objective's value otherwise.
    :param direction: ``maximize`` or ``minimize``; default from the metric.
    :param n_jobs: trials run in parallel threads.
    :param timeout: seconds for this attempt's trials; the study keeps what finished.
    :param sampler: ``tpe``, ``random``, ``cmaes``, ``qmc`` (seeded with ``seed``) or a sampler instance.
    :param pruner: ``median``, ``hyperband``, ``successive_halving``, a pruner instance, or None.
    :param optuna_conn_id: Airflow connection of the study database.
    :param heartbeat_interval: seconds between trial heartbeats; ``grace_period`` after which a silent
        trial is stale (set the task's ``retry_delay`` longer, so a retry finds it stale).
    :return: ``{"best_params", "best_value", "study_name", "parent_run_id", "n_complete"}`` as XCom;
        ``best_params`` is also pushed under its own key, so ``MLflowTrainOperator(hyperparams=
        tune.output["best_params"])`` takes it directly.
    """

    template_fields: Sequence[str] = (
        "input_snapshot", "target", "search_space", "features", "experiment_name", "store", "metric", "n_trials",
    )

    def __init__(
        self,
        *,
        n_trials: int | str,
        search_space: dict[str, Any] | str | None = None,
        objective: Callable[..., float] | str | None = None,
        metric: str | None = None,
        direction: str | None = None,
        n_jobs: int = 1,
        timeout: float | None = None,
        sampler: str | Any = "tpe",
        pruner: str | Any | None = None,
        optuna_conn_id: str | None = OptunaStorageHook.default_conn_name,
        heartbeat_interval: int = 30,
        grace_period: int = 90,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_trials = n_trials
        self.search_space = search_space
        self.objective = objective
        self.metric = metric
        self.direction = direction
        self.n_jobs = n_jobs
        self.timeout = timeout
        self.sampler = sampler
        self.pruner = pruner
        self.optuna_conn_id = optuna_conn_id
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period

    def _tuning_request(self, context: Any) -> tuple[Any, Any]:
        """Everything checked before the study exists: counts, search space, metric, sampler."""
        from airflow_mlops.tracking.metrics import DEFAULT_METRIC, check_metric, direction
        from airflow_mlops.tracking.training import build_estimator, prepare
        from airflow_mlops.tuning.space import parse_search_space
        from airflow_mlops.tuning.study import TuningRequest, study_name
        from airflow_mlops.utils.imports import import_object

        n_trials = _positive_int(self.n_trials, "n_trials")
        n_jobs = _positive_int(self.n_jobs, "n_jobs")
        if (self.search_space is None) == (self.objective is None):
            raise MlopsError("give either search_space (with estimator) or objective")
        objective = import_object(self.objective) if isinstance(self.objective, str) else self.objective
        space = []
        if self.search_space is not None:
            if self.estimator is None:
                raise MlopsError("search_space needs an estimator to tune")
            names = build_estimator(self.estimator, {}, self.seed).get_params(deep=True)
            space = parse_search_space(self.search_space, names)
        training = self.training_request(context, hyperparams={}, train_fn=None)
        data = prepare(training)
        metric = self.metric or (DEFAULT_METRIC.get(data.model_type) if data.model_type else None)
        if metric is None:
            raise MlopsError("give metric: the name of the value the objective returns")
        if objective is None:
            check_metric(metric, data.model_type)
        chosen_direction = self.direction or direction(metric)
        if chosen_direction is None:
            raise MlopsError(f"give direction (maximize or minimize) for metric {metric!r}")
        if chosen_direction not in ("maximize", "minimize"):
            raise MlopsError(f"direction must be maximize or minimize, got {chosen_direction!r}")
        request = TuningRequest(
            training=training, n_trials=n_trials, metric=metric, direction=chosen_direction, space=space,
            objective=objective, n_jobs=n_jobs, timeout=self.timeout,
            sampler=_build(self.sampler, SAMPLERS, "optuna.samplers", seed=self.seed),
            pruner=_build(self.pruner, PRUNERS, "optuna.pruners"),
            study_name=study_name(training.identity),
        )
        return request, data

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.tracking.runs import get_or_create_experiment
        from airflow_mlops.tuning.study import run_tuning

        request, data = self._tuning_request(context)
        storage_hook = OptunaStorageHook(self.optuna_conn_id)
        request.storage_description = storage_hook.describe()
        storage = storage_hook.get_storage(self.heartbeat_interval, self.grace_period)
        hook = MlflowHook(self.mlflow_conn_id)
        with hook.tracking_session() as client:
            experiment_id = get_or_create_experiment(client, self.experiment_name or self.dag_id, hook.settings.artifact_root)
            result = run_tuning(
                client, experiment_id, storage, request, data,
                on_parent_started=lambda run_id: self.run_started(context, hook, experiment_id, run_id),
            )
        self._active_run_id = None
        MlflowRunLink.persist(context, hook.run_url(experiment_id, result.parent_run_id))
        context["ti"].xcom_push(key="best_params", value=result.best_params)
        self.log.info("Study %s: best %s = %s with %s", result.study_name, request.metric, result.best_value, result.best_params)
        return result.to_xcom()


def _positive_int(value: Any, name: str) -> int:
    """An integer from a value or its rendered template text; a clear error otherwise."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or (isinstance(value, float) and value != number):
        raise MlopsError(f"{name} must be a positive integer, got {value!r}")
    return number


def _build(choice: Any, names: dict[str, str], module: str, **options: Any) -> Any:
    """A sampler or pruner from its short name (with ``options``), or the instance given."""
    import importlib

    if choice is None or not isinstance(choice, str):
        return choice
    if choice not in names:
        raise MlopsError(f"unknown {module.rsplit('.', 1)[1][:-1]} {choice!r}; choose from {', '.join(names)}")
    return getattr(importlib.import_module(module), names[choice])(**options)
