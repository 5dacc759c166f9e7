"""OptunaTuneOperator: a hyperparameter search that survives worker crashes and retries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.optuna import OptunaStorageHook, optuna_in_task_log
from airflow_mlops.links.mlflow import MlflowRunLink
from airflow_mlops.operators._base import SnapshotModelOperator
from airflow_mlops.operators._input import bad_input_fails_at_once
from airflow_mlops.utils.templated import as_int


class OptunaTuneOperator(SnapshotModelOperator):
    """Search hyperparameters with Optuna on a data snapshot; resumes its study on retry.

    The study is stored in a database (``optuna_conn_id``: PostgreSQL in production, embedded SQLite
    by default) under a name derived from dag_id, task_id, run_id, map_index and a fingerprint of the
    inputs (snapshot, search space, metric, validation), or under ``study_name`` to share it, so a
    retry on the same inputs loads it and runs only the missing trials: ``n_trials`` complete trials
    is the total for the task instance; cleared after new data arrived, the task starts a new study.
    Trials left RUNNING by a killed attempt are failed and re-queued when the retry starts, however
    soon. A trial that raises is recorded as FAIL and replaced, and so is a pruned one; the study
    stops when every trial fails.

    Trials never see the held-out test split (``test_size``), which only the training run scores:
    the built-in objective cross-validates on the training part (``cv`` folds, stratified for
    classifiers; or one ``validation_size`` split), reporting each fold to the pruner, with the
    metric definitions of ``mlflow.models.evaluate``.
    MLflow gets one parent run per task instance (best params and value, optimization-history and
    param-importance plots, study name and storage without credentials as tags) and one nested run
    per trial (params, value, state, duration). Common parameters are described on
    :class:`~airflow_mlops.operators._base.SnapshotModelOperator`.

    :param n_trials: COMPLETE trials the study must have; failed and pruned ones do not count (templated).
        In a shared study, the total that all the tasks sharing it make together.
    :param search_space: ``{"name": {"type": "float"|"int"|"categorical", ...}}`` or its JSON text
        (templated), for ``estimator``; checked whole before any trial.
    :param objective: callable or dotted path ``objective(trial, data) -> float``, for full control;
        ``data`` is the training part only: ``frame``, ``X_train``, ``y_train`` (validate within it).
    :param metric: metric to optimize (templated); default ``roc_auc`` for classifiers,
        ``root_mean_squared_error`` for regressors; the name of an objective's value otherwise.
    :param direction: ``maximize`` or ``minimize``; default from the metric.
    :param n_jobs: trials run in parallel threads.
    :param timeout_seconds: seconds for this attempt's trials; the study keeps what finished.
    :param sampler: ``tpe``, ``random``, ``cmaes``, ``qmc`` (seeded with ``seed``) or a sampler instance.
    :param pruner: ``median``, ``hyperband``, ``successive_halving``, a pruner instance, or None.
    :param cv: folds of the built-in objective's cross-validation (templated).
    :param validation_size: score on one validation split of this fraction of the training part instead.
    :param optuna_conn_id: Airflow connection of the study database.
    :param heartbeat_interval: seconds between trial heartbeats; ``grace_period`` after which a silent
        trial of a worker that died is stale (for other workers sharing the study).
    :param study_name: share one study among every task that names it (templated), Optuna's
        distributed mode: for example ``"fraud.{{ run_id }}"`` on a mapped task
        (``OptunaTuneOperator.partial(...).expand(n_jobs=[2, 2, 2])``) or on several tasks of one DAG
        run, with an Optuna database they all reach (PostgreSQL). The tasks make exactly ``n_trials``
        COMPLETE trials together, each trial run once, by one task, under that task's parent run; each
        task finishes when the study has them all (replacing the trials of a worker that died, once
        stale) and returns the whole study's best. Each worker's sampler is seeded at random, so the
        workers try different points. A task whose inputs (snapshot, search space, metric, ...) differ
        from those the study was made from is refused before any trial: a DAG run cleared after new
        data needs another name, or the old study deleted. Default: a study of the task instance's own.
        ``airflow_mlops.tuning.best_of`` picks the best of mapped tasks' results for the training task.
    :return: ``{"best_params", "best_value", "study_name", "parent_run_id", "n_complete"}`` as XCom;
        ``best_params`` is also pushed under its own key, so ``MlflowTrainOperator(hyperparams=
        tune.output["best_params"])`` takes it directly.
    """

    template_fields: Sequence[str] = (
        "input_snapshot", "target", "search_space", "features", "experiment_name", "store", "metric", "n_trials", "cv",
        "study_name",
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
        timeout_seconds: float | None = None,
        sampler: str | Any = "tpe",
        pruner: str | Any | None = None,
        cv: int | str = 5,
        validation_size: float | None = None,
        optuna_conn_id: str | None = OptunaStorageHook.default_conn_name,
        heartbeat_interval: int = 30,
        grace_period: int = 90,
        study_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_trials = n_trials
        self.search_space = search_space
        self.objective = objective
        self.metric = metric
        self.direction = direction
        self.n_jobs = n_jobs
        self.timeout_seconds = timeout_seconds
        self.sampler = sampler
        self.pruner = pruner
        self.cv = cv
        self.validation_size = validation_size
        self.optuna_conn_id = optuna_conn_id
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.study_name = study_name

    @bad_input_fails_at_once
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.tracking.data import prepare
        from airflow_mlops.tracking.runs import get_or_create_experiment
        from airflow_mlops.tuning.parent_run import run_tuning
        from airflow_mlops.tuning.request import checked_space, tuning_request
        from airflow_mlops.utils.imports import import_object

        lineage = self.start_lineage(context)
        objective = import_object(self.objective) if isinstance(self.objective, str) else self.objective
        space = checked_space(self.search_space, objective, self.estimator, self.seed)
        training = self.training_request(context, hyperparams={}, train_fn=None)
        data = prepare(training)
        request = tuning_request(
            training, data, n_trials=as_int(self.n_trials, "n_trials"), space=space, objective=objective,
            metric=self.metric, direction=self.direction, cv=as_int(self.cv, "cv"), validation_size=self.validation_size, n_jobs=self.n_jobs,
            timeout_seconds=self.timeout_seconds, sampler=self.sampler, pruner=self.pruner, study_name=self.study_name,
        )
        lineage.run["studyName"] = request.study_name
        storage_hook = OptunaStorageHook(self.optuna_conn_id)
        request.storage_description = storage_hook.describe()
        hook = MlflowHook(self.mlflow_conn_id)
        with optuna_in_task_log(), hook.tracking_session() as client:
            storage = storage_hook.get_storage(self.heartbeat_interval, self.grace_period)
            experiment_id = get_or_create_experiment(client, self.experiment_name or self.dag_id, hook.settings.artifact_root)
            result = run_tuning(
                client, experiment_id, storage, request, data,
                on_parent_started=lambda run_id: self.run_started(context, hook, experiment_id, run_id,
                                                                    "study parent run"),
            )
        self._active_run_id = None
        lineage.run.update(mlflowRunId=result.parent_run_id, mlflowExperimentId=experiment_id)  # also a reused run
        MlflowRunLink.persist(context, hook.run_url(experiment_id, result.parent_run_id))
        context["ti"].xcom_push(key="best_params", value=result.best_params)
        self.log.info("Study %s: best %s = %s with %s", result.study_name, request.metric, result.best_value, result.best_params)
        return result.to_xcom()

