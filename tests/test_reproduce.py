"""airflow-mlops reproduce: training runs, tuning trials and ETL snapshots re-created from their records alone."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_mlops.errors import MlopsError, SnapshotError
from airflow_mlops.reproduce import REPORT_ARTIFACT, CodeDriftError, reproduce
from airflow_mlops.reproduce.report import compare_metrics
from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.tracking.tags import REPRODUCES_TAG
from tests.conftest import REPO, run_cli
from tests.task_process import attempt_config, run_attempt, runs_of
from tests.test_snapshot_store import flip_byte, packed_at

TRAIN_MODULE = '''
import os

from sklearn.linear_model import LogisticRegression


def fit(train_frame, params):
    """A logistic regression, and a metric that an environment variable can shift (not in the record)."""
    model = LogisticRegression(max_iter=500, C=params["C"])
    model.fit(train_frame.drop(columns=["label"]), train_frame["label"])
    return model, {"offset": float(os.environ.get("REPRODUCE_OFFSET", "0"))}
'''

TRANSFORM_MODULE = '''
def positive_f0(spark, inputs, threshold):
    return inputs["table"].where(inputs["table"].f0 > threshold)
'''


def here(client, ref, **options):
    """``reproduce`` on local stores, in this process."""
    return reproduce(ref, client=client, open_store=SnapshotStore.open, **options)


def train(tmp_path, record, **operator) -> str:
    """One finished MlflowTrainOperator run (its own task instance); its run id."""
    return run_attempt(attempt_config(tmp_path, record.uri, 1, **operator))["result"]["run_id"]


def user_module(tmp_path, monkeypatch, source: str) -> tuple[str, Path]:
    """A module of the user's own under ``tmp_path/code``, importable here; (module name, file)."""
    folder = tmp_path / "code"
    folder.mkdir(exist_ok=True)
    name = f"user_code_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    return name, folder / f"{name}.py"


def test_a_training_run_reproduces_exactly_as_a_new_run_tagged_with_it(tmp_path, snapshot, embedded_client):
    _store, record = snapshot
    run_id = train(tmp_path, record, estimator="sklearn.ensemble.RandomForestClassifier",
                   hyperparams='{"n_estimators": 15, "max_depth": 4, "max_features": 0.6}', seed=7)

    report = here(embedded_client, run_id)

    assert report.ok and report.kind == "training run" and report.reference == run_id
    rows = {row.name: row for row in report.rows}
    assert {"roc_auc", "accuracy_score", "log_loss"} <= set(rows)
    assert all(row.recorded == row.reproduced and row.difference == 0 for row in report.rows)
    assert report.environment == [] and report.code == []
    original, new = embedded_client.get_run(run_id), embedded_client.get_run(report.reproduction)
    assert new.info.status == "FINISHED" and new.info.experiment_id == original.info.experiment_id
    assert new.data.tags[REPRODUCES_TAG] == run_id
    assert not any(tag.startswith("airflow.") for tag in new.data.tags)  # not a run of the original task instance
    assert new.data.params == original.data.params
    logged = json.loads(Path(embedded_client.download_artifacts(report.reproduction, REPORT_ARTIFACT, str(tmp_path))).read_text())
    assert logged["ok"] and logged["reproduction"] == report.reproduction and len(logged["rows"]) == len(report.rows)
    text = report.render()
    assert f"reproduced training run {run_id}" in text and "roc_auc" in text and f"result: reproduced, {len(rows)} of {len(rows)} values match" in text


def test_an_estimator_instance_reproduces_and_a_damaged_input_object_makes_it_refuse(tmp_path, snapshot, embedded_client):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    store, record = snapshot
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    run_id = train(tmp_path, record, estimator=pipeline, hyperparams={"logisticregression__C": 0.3})
    assert here(embedded_client, run_id).ok  # the instance is rebuilt from the run's definition/estimator.skops

    (entry,) = store.manifest(record.snapshot_id)
    pack, offset, _ = packed_at(Path(store.uri), entry.digest)  # a small file: in a pack
    flip_byte(pack, offset + 100)

    # the restored copy under AIRFLOW_HOME is intact, but the store no longer vouches for the data
    with pytest.raises(SnapshotError, match=f"snapshot {record.snapshot_id} fails verification.*damaged object {entry.digest}"):
        here(embedded_client, run_id)
    finished = [run for run in runs_of(embedded_client, tmp_path.name) if run.info.status == "FINISHED"]
    assert len(finished) == 2  # the run and its first reproduction, nothing since


def test_the_cli_exits_0_when_it_reproduces_1_when_a_metric_differs_2_for_a_bad_ref(tmp_path, snapshot, embedded_client, monkeypatch):
    _store, record = snapshot
    module, path = user_module(tmp_path, monkeypatch, TRAIN_MODULE)
    run_id = train(tmp_path, record, train_fn=f"{module}:fit", hyperparams={"C": 0.5})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path.parent), str(REPO)])}

    same = run_cli("reproduce", run_id, env=env)
    assert same.returncode == 0, same.stderr
    assert "offset" in same.stdout and "result: reproduced" in same.stdout

    shifted = run_cli("reproduce", run_id, "--tolerance", "0.1", env={**env, "REPRODUCE_OFFSET": "0.25"})
    assert shifted.returncode == 1, shifted.stderr
    (offset_line,) = [line for line in shifted.stdout.splitlines() if line.startswith("offset")]
    assert offset_line.split() == ["offset", "0.0", "0.25", "+0.25", "DIFFERS"]
    assert "result: NOT reproduced, 1 of" in shifted.stdout

    bad = run_cli("reproduce", "not-a-run", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("airflow-mlops: error: 'not-a-run' is neither an MLflow run nor a snapshot")
    reproductions = [run for run in runs_of(embedded_client, tmp_path.name) if run.data.tags.get(REPRODUCES_TAG) == run_id]
    assert len(reproductions) == 2 and {run.info.status for run in reproductions} == {"FINISHED"}


def test_a_tuning_trial_reproduces_its_value(tmp_path, snapshot, embedded_client):
    _store, record = snapshot
    config = attempt_config(
        tmp_path, record.uri, 1, estimator="sklearn.tree.DecisionTreeClassifier", n_trials=2, cv=3,
        search_space={"max_depth": {"type": "int", "low": 2, "high": 6},
                      "criterion": {"type": "categorical", "choices": ["gini", "entropy"]},
                      "min_impurity_decrease": {"type": "float", "low": 0.0, "high": 0.01}},
    )
    parent_id = run_attempt({**config, "operator_class": "OptunaTuneOperator"})["result"]["parent_run_id"]
    trial = next(run for run in runs_of(embedded_client, tmp_path.name)
                 if run.data.tags.get("mlflow.parentRunId") == parent_id and run.info.status == "FINISHED")

    report = here(embedded_client, trial.info.run_id)

    assert report.ok and report.kind == "tuning trial"
    (row,) = report.rows
    assert row.name == "roc_auc" and row.recorded == trial.data.metrics["roc_auc"] == row.reproduced
    new = embedded_client.get_run(report.reproduction)
    assert new.info.status == "FINISHED" and new.data.tags[REPRODUCES_TAG] == trial.info.run_id
    assert new.data.params == trial.data.params
    with pytest.raises(MlopsError, match="is a tuning study; reproduce one of its trial runs"):
        here(embedded_client, parent_id)


class SessionRunner:
    """The tests' shared Spark session as a SparkRunner (left running afterwards)."""

    def __init__(self, spark):
        self.spark = spark

    def master(self) -> str:
        return self.spark.sparkContext.master

    @contextmanager
    def session(self):
        yield self.spark


def test_an_etl_snapshot_reproduces_to_the_same_id_and_a_changed_transformation_names_the_files(
        tmp_path, snapshot, spark, monkeypatch):
    from airflow_mlops.etl.job import SparkJob
    from airflow_mlops.etl.spark import EtlInput

    store, raw = snapshot
    module, path = user_module(tmp_path, monkeypatch, TRANSFORM_MODULE)
    item = EtlInput("table", store.materialize(raw.snapshot_id, tmp_path / "restored"), raw.snapshot_id, raw.uri)
    job = SparkJob(transform=f"{module}:positive_f0", transform_kwargs={"threshold": 0.0})
    derived, _tables = job.run(SessionRunner(spark), store, [item], staging_root=tmp_path / "staging")
    options = {"client": None, "open_store": SnapshotStore.open, "spark_runner": lambda: SessionRunner(spark)}

    report = reproduce(f"{store.uri}#{derived.snapshot_id}", **options)

    assert report.ok and report.reproduction == derived.snapshot_id and report.kind == "ETL snapshot"
    assert [record.extra.get("reproduces") for record in store.records(derived.snapshot_id)] == [derived.snapshot_id, None]

    path.write_text(TRANSFORM_MODULE.replace("> threshold", "> threshold + 0.5"))
    monkeypatch.delitem(sys.modules, module)  # a new process would import the edited module
    with pytest.raises(CodeDriftError, match=f"transformation {path}: changed"):
        reproduce(derived.snapshot_id[:10], default_store=store.uri, **options)
    changed = reproduce(derived.snapshot_id[:10], default_store=store.uri, allow_code_drift=True, **options)

    assert not changed.ok and changed.code == [f"transformation {path}: changed"]
    assert [row.name for row in changed.rows] == ["snapshot id", "part-00000.parquet"]
    assert changed.rows[0].recorded == derived.snapshot_id and changed.rows[0].reproduced == changed.reproduction
    assert store.records(changed.reproduction)[0].parents == [raw.snapshot_id]


def test_metrics_compare_within_the_tolerance_and_missing_ones_differ():
    rows = compare_metrics({"a": 0.5, "b": 1.0, "gone": 2.0, "nan": float("nan")},
                           {"a": 0.5, "b": 1.001, "new": 3.0, "nan": float("nan")}, tolerance=0.01)
    assert [(row.name, row.ok) for row in rows] == [("a", True), ("b", True), ("gone", False), ("nan", True), ("new", False)]
    assert rows[1].difference == pytest.approx(0.001) and rows[2].reproduced is None
    assert not compare_metrics({"b": 1.0}, {"b": 1.001}, tolerance=0.0)[0].ok


def load_dag_module():
    spec = importlib.util.spec_from_file_location("reproduce_run_dag", REPO / "dags" / "reproduce_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dag_parses_without_heavy_imports_and_requires_a_run_id(airflow_home):
    heavy = ("mlflow", "sklearn", "pyspark", "optuna", "pandas")
    parse = (f"import runpy, sys; runpy.run_path({str(REPO / 'dags' / 'reproduce_run.py')!r}); "
             f"print([name for name in {heavy!r} if name in sys.modules])")
    assert subprocess.run([sys.executable, "-c", parse], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    dag = load_dag_module().dag
    assert dag.schedule is None and dag.task_ids == ["reproduce"]
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="run_id: No value passed"):
        dag.params.validate()  # required: a trigger must give it
    run_id = dag.params.get_param("run_id")
    assert run_id.resolve(uuid.uuid4().hex) and run_id.resolve("/data/store#" + "ab" * 32)
    for wrong in ("", "not a run", "ABC123"):
        with pytest.raises(ParamValidationError):
            run_id.resolve(wrong)


def test_the_dag_task_fails_when_a_metric_differs_and_an_edited_training_module_is_refused_unless_allowed(
        tmp_path, snapshot, embedded_client, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    _store, record = snapshot
    module, path = user_module(tmp_path, monkeypatch, TRAIN_MODULE)
    run_id = train(tmp_path, record, train_fn=f"{module}:fit", hyperparams={"C": 0.5})
    task = load_dag_module().dag.get_task("reproduce").python_callable
    ti = SimpleNamespace(dag_id="reproduce_run", run_id="manual__1", task_id="reproduce", map_index=-1, try_number=1)
    params = {"run_id": run_id, "tolerance": 0.0, "allow_code_drift": False}

    result = task(params=params, ti=ti, logical_date=None)
    assert result["ok"] and result["reference"] == run_id
    new = embedded_client.get_run(result["reproduction"])
    assert new.data.tags[REPRODUCES_TAG] == run_id and new.data.tags["airflow.dag_id"] == "reproduce_run"

    monkeypatch.setenv("REPRODUCE_OFFSET", "1")
    ti.run_id = "manual__2"
    with pytest.raises(AirflowFailException, match=f"training run {run_id} did not reproduce"):
        task(params=params, ti=ti, logical_date=None)
    monkeypatch.delenv("REPRODUCE_OFFSET")

    path.write_text(TRAIN_MODULE + "\n# tuned later\n")
    runs_before = len(runs_of(embedded_client, tmp_path.name))
    with pytest.raises(CodeDriftError, match=f"train module {path}: changed; pass --allow-code-drift"):
        here(embedded_client, run_id)
    assert len(runs_of(embedded_client, tmp_path.name)) == runs_before
    report = here(embedded_client, run_id, allow_code_drift=True)
    assert report.ok and report.code == [f"train module {path}: changed"]
    assert f"train module {path}: changed" in report.render()
