"""RegisterModelOperator: register a training run's model and promote it through the champion gate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_mlops.hooks.base import connection_database_url
from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.snapshot_store import restore_snapshot_ref
from airflow_mlops.lineage.datasets import model_dataset
from airflow_mlops.links.registry import MlflowModelVersionLink
from airflow_mlops.operators._input import bad_input_fails_at_once
from airflow_mlops.operators._lineage import OpenLineageMixin, SnapshotUse
from airflow_mlops.utils.airflow_context import task_identity, task_instance_url
from airflow_mlops.utils.templated import as_float, as_mapping


class RegisterModelOperator(OpenLineageMixin, BaseOperator):
    """Register a training run's model as a version of a registered model, then run the champion gate.

    Registration is idempotent: a retry, or another task registering the same run, gets the existing
    version. The version is tagged with its training run, input snapshot and this task instance.

    The gate scores the challenger and the current champion (alias ``champion``) on the same rows: the
    challenger's held-out test split, rebuilt from its training run's record (snapshot, target,
    features, seed, test size), with the metrics of ``mlflow.models.evaluate``. Better by the rule: it
    takes the champion alias and the old champion gets ``previous-champion``; not better: it gets
    ``challenger``; below ``floor``: no alias. With no champion yet, the first version above the floor
    becomes champion. Decision, scores, evaluation data and reason become version tags; every alias
    move is appended to the registered model's promotion history (``airflow-mlops history NAME``).

    Concurrent promotions (a backfill) are serialized by a lock around read champion → score → decide
    → move aliases: a PostgreSQL advisory lock on ``lock_conn_id`` (across workers and machines), else
    a file lock under ``$AIRFLOW_HOME/airflow_mlops/locks`` (workers on one machine only).

    OpenLineage: the training run's snapshot as input, the model version as output dataset
    (``models/<name>``, version number as its version), the training run as ``modelRunId``.

    :param model_name: registered model name (templated).
    :param training: an ``MlflowTrainOperator`` result (``train_task.output``) or a run id (templated).
    :param metric: deciding metric (templated); default ``roc_auc`` (classifiers) or ``root_mean_squared_error``.
    :param direction: ``maximize`` or ``minimize``; default the metric's own.
    :param min_improvement: how much better than the champion (templated); strictly better when 0.
    :param relative_improvement: ``min_improvement`` is a fraction of the champion's score.
    :param floor: absolute bound the challenger must reach to get any alias.
    :param guard_metrics: dict (or JSON text) of other metric → tolerated worsening (templated).
    :param description: version description (templated); default names the run and snapshot.
    :param champion_alias: alias of the serving version.
    :param challenger_alias: alias of the latest version that did not beat the champion.
    :param previous_alias: alias of the champion before the last promotion (what rollback restores).
    :param mlflow_conn_id: Airflow ``mlflow`` connection; the embedded store when not configured.
    :param lock_conn_id: Airflow ``postgres`` connection (or any with an extra ``url``) for the lock.
    :param store: snapshot store for bare snapshot ids.
    :param aws_conn_id: AWS connection for ``s3://`` snapshot stores.
    :return: ``{"name", "version", "decision", "aliases", "challenger_score", "champion_score", "reason"}``.
    """

    template_fields: Sequence[str] = ("model_name", "training", "metric", "min_improvement", "guard_metrics", "description")
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#e4f0d6"

    def __init__(
        self,
        *,
        model_name: str,
        training: dict[str, Any] | str,
        metric: str | None = None,
        direction: str | None = None,
        min_improvement: float | str = 0.0,
        relative_improvement: bool = False,
        floor: float | None = None,
        guard_metrics: dict[str, float] | str | None = None,
        description: str | None = None,
        champion_alias: str = "champion",
        challenger_alias: str = "challenger",
        previous_alias: str = "previous-champion",
        mlflow_conn_id: str | None = MlflowHook.default_conn_name,
        lock_conn_id: str | None = None,
        store: str | None = None,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training = training
        self.metric = metric
        self.direction = direction
        self.min_improvement = min_improvement
        self.relative_improvement = relative_improvement
        self.floor = floor
        self.guard_metrics = guard_metrics
        self.description = description
        self.champion_alias = champion_alias
        self.challenger_alias = challenger_alias
        self.previous_alias = previous_alias
        self.mlflow_conn_id = mlflow_conn_id
        self.lock_conn_id = lock_conn_id
        self.store = store
        self.aws_conn_id = aws_conn_id

    @bad_input_fails_at_once
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_mlops.registry.gate import GateRule
        from airflow_mlops.registry.promotion import Aliases, register_and_gate
        from airflow_mlops.registry.registration import training_reference
        from airflow_mlops.tracking.tags import SNAPSHOT_URI_TAG

        lineage = self.start_lineage(context)

        rule = GateRule(
            metric=self.metric or None, direction=self.direction,
            min_improvement=as_float(self.min_improvement, "min_improvement"), relative=self.relative_improvement,
            floor=self.floor, guard_metrics={name: as_float(tolerance, f"guard_metrics[{name!r}]") for name, tolerance
                                             in as_mapping(self.guard_metrics, "guard_metrics").items()},
        )
        hook = MlflowHook(self.mlflow_conn_id)

        def linked(version: Any) -> None:
            MlflowModelVersionLink.persist(context, hook.model_version_url(version.name, version.version))
            self.log.info("Model %s version %s", version.name, version.version)

        with hook.tracking_session() as client:
            run_id, _ = training_reference(self.training)
            lineage.run["modelRunId"] = run_id
            snapshot_uri = client.get_run(run_id).data.tags.get(SNAPSHOT_URI_TAG)
            if snapshot_uri:
                lineage.inputs.append(SnapshotUse(snapshot_uri))
            result = register_and_gate(
                client, self.model_name, self.training,
                restore=lambda uri: restore_snapshot_ref(uri, self.store, self.aws_conn_id)[2],
                rule=rule, aliases=Aliases(self.champion_alias, self.challenger_alias, self.previous_alias),
                identity=task_identity(context), description=self.description, task_instance_url=task_instance_url(context),
                lock_url=connection_database_url(self.lock_conn_id), on_registered=linked,
            )
        lineage.outputs.append(model_dataset(hook.settings.registry_uri, result["name"], result["version"]))
        self.log.info("Gate: version %s -> %s (%s)", result["version"], result["decision"], result["reason"])
        return result
