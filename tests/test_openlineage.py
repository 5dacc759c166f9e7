"""OpenLineage events from every operator: under a real task run (``airflow dags test``, file transport), and
the facet methods called directly for what a run does not show (derived snapshots, unreadable stores)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from airflow_mlops.lineage.datasets import model_dataset, snapshot_dataset
from airflow_mlops.snapshots import SnapshotStore
from tests.conftest import REPO, VENV_BIN

DAG_FOLDER = REPO / "tests" / "openlineage_dags"
DAG_ID = "openlineage_pipeline"
TASKS = ("snapshot_rows", "tune", "train", "register", "score")
COLUMNS = {"id": "int64", **{f"f{i}": "double" for i in range(5)}, "label": "int64"}


def write_rows(folder: Path) -> None:
    """A small labelled table with an id column: the CSV the test DAG snapshots, trains on and scores."""
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=200, n_features=5, n_informative=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)]).round(6).assign(label=y)
    folder.mkdir(parents=True)
    frame.insert(0, "id", range(len(frame)))
    frame.to_csv(folder / "rows.csv", index=False)


def airflow(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([str(VENV_BIN / "airflow"), *args], capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 0, f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """The test DAG run once with OpenLineage's file transport: its COMPLETE events by task, its stores."""
    root = tmp_path_factory.mktemp("openlineage")
    home, events = root / "airflow", root / "events.jsonl"
    write_rows(root / "rows")
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW_MLOPS_STORE"}
    env.update(
        AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FOLDER), AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
    )
    airflow(env, "db", "migrate")
    airflow(env, "dags", "test", DAG_ID, "--conf", json.dumps({"source": str(root / "rows")}))
    emitted = [json.loads(line) for line in events.read_text().splitlines()]
    complete = {e["job"]["name"].removeprefix(f"{DAG_ID}."): e for e in emitted if e["eventType"] == "COMPLETE"}
    records = {r.airflow["task_id"]: r for r in SnapshotStore.open(str(home / "airflow_mlops" / "snapshots")).records()}
    return {"home": home, "events": complete, "records": records, "registry": f"sqlite:///{home}/airflow_mlops/mlflow.db"}


def named(dataset: dict) -> tuple[str, str, str]:
    """(namespace, name, version facet) of a dataset in an event."""
    return dataset["namespace"], dataset["name"], dataset["facets"]["version"]["datasetVersion"]


def expected(ref) -> tuple[str, str, str]:
    return ref.namespace, ref.name, ref.version


def run_facet(pipeline: dict, task: str) -> dict:
    return pipeline["events"][task]["run"]["facets"]["airflowMlops"]


def test_every_task_completes_with_its_snapshots_named_and_versioned_as_in_the_store(pipeline):
    events, records = pipeline["events"], pipeline["records"]
    assert set(TASKS) <= set(events)
    rows, scores = expected(snapshot_dataset(records["snapshot_rows"])), expected(snapshot_dataset(records["score"]))
    assert rows == ("file", f"{records['snapshot_rows'].store}/{DAG_ID}/snapshot_rows", records["snapshot_rows"].snapshot_id)

    assert [named(d) for d in events["snapshot_rows"]["outputs"]] == [rows]
    for task in ("tune", "train", "register"):
        assert [named(d) for d in events[task]["inputs"]] == [rows], task
    assert rows in [named(d) for d in events["score"]["inputs"]]
    assert [named(d) for d in events["score"]["outputs"]] == [scores]
    assert events["tune"]["outputs"] == events["train"]["outputs"] == []

    schema = events["snapshot_rows"]["outputs"][0]["facets"]["schema"]["fields"]
    assert {field["name"]: field["type"] for field in schema} == COLUMNS  # Arrow's types, from the CSV's first block
    assert events["train"]["inputs"][0]["facets"]["schema"]["fields"] == schema  # the same read from the restored copy
    score_schema = events["score"]["outputs"][0]["facets"]["schema"]["fields"]
    assert [field["name"] for field in score_schema] == ["id", "prediction"]


def test_the_model_version_and_the_mlflow_runs_are_those_in_mlflow(pipeline):
    import mlflow

    from airflow_mlops.snapshots.hashing import digest_bytes

    events = pipeline["events"]
    client = mlflow.MlflowClient(pipeline["registry"])
    (version,) = client.search_model_versions("name = 'openlineage_model'")
    model = expected(model_dataset(pipeline["registry"], "openlineage_model", version.version))
    assert model[1:] == ("models/openlineage_model", "1")
    assert [named(d) for d in events["register"]["outputs"]] == [model]
    assert model in [named(d) for d in events["score"]["inputs"]]

    runs = client.search_runs([client.get_experiment_by_name("openlineage").experiment_id])
    (train,) = [r for r in runs if r.data.tags["airflow.task_id"] == "train"]
    (study,) = [r for r in runs if r.data.tags["airflow.task_id"] == "tune" and "mlflow.parentRunId" not in r.data.tags]
    assert version.run_id == train.info.run_id
    train_facet, tune_facet = run_facet(pipeline, "train"), run_facet(pipeline, "tune")
    assert train_facet["mlflowRunId"] == train.info.run_id
    assert train_facet["mlflowExperimentId"] == train.info.experiment_id
    assert train_facet["codeDigests"] == {"dag_file": train.data.tags["airflow_mlops.dag_file_digest"]}
    assert train_facet["codeDigests"]["dag_file"] == digest_bytes((DAG_FOLDER / f"{DAG_ID}.py").read_bytes())
    assert tune_facet["mlflowRunId"] == study.info.run_id
    assert tune_facet["studyName"] == study.data.tags["optuna.study_name"]
    assert run_facet(pipeline, "register")["modelRunId"] == run_facet(pipeline, "score")["modelRunId"] == train.info.run_id


def test_the_events_name_the_datasets_and_versions_that_airflow_mlops_lineage_names(pipeline):
    """One naming for both: the datasets of every event are the dataset nodes of a lineage walk from the raw snapshot."""
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW_MLOPS_STORE"}
    shown = subprocess.run(
        [str(VENV_BIN / "airflow-mlops"), "lineage", pipeline["records"]["snapshot_rows"].snapshot_id, "--format", "json"],
        capture_output=True, text=True, env={**env, "AIRFLOW_HOME": str(pipeline["home"])},
    )
    assert shown.returncode == 0, shown.stderr
    in_lineage = {(node["dataset"]["namespace"], node["dataset"]["name"], node["dataset"]["version"])
                  for node in json.loads(shown.stdout)["nodes"] if "dataset" in node}
    in_events = {named(dataset) for event in pipeline["events"].values() for dataset in event["inputs"] + event["outputs"]}
    assert len(in_events) == 3 and in_events == in_lineage  # the rows, the model version, the predictions


# ----------------------------------------------------------------- the facet methods called directly


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    return SnapshotStore.open(str(tmp_path / "store"))


def facets(operator, lineage):
    operator._lineage = lineage
    return operator.get_openlineage_facets_on_complete(None)


def test_an_input_is_named_by_its_producer_in_the_same_run_else_by_its_first_producer(store, tmp_path):
    from airflow_mlops.operators import MlflowTrainOperator
    from airflow_mlops.operators._lineage import SnapshotUse, TaskLineage

    write_rows(tmp_path / "rows")
    first = store.snapshot(tmp_path / "rows", airflow={"dag_id": "ingest", "run_id": "r0", "task_id": "import"})
    again = store.snapshot(tmp_path / "rows", airflow={"dag_id": "train_daily", "run_id": "r1", "task_id": "snap"})
    assert first.snapshot_id == again.snapshot_id
    operator = MlflowTrainOperator(task_id="train", input_snapshot=first.uri, target="label")

    for run_id, producer in (("r1", again), ("r2", first)):
        use = SnapshotUse(first.uri, tmp_path / "rows")
        lineage = facets(operator, TaskLineage({"dag_id": "train_daily", "run_id": run_id}, inputs=[use]))
        (dataset,) = lineage.inputs
        assert (dataset.namespace, dataset.name) == ("file", snapshot_dataset(producer).name)
        assert dataset.name == f"{tmp_path / 'store'}/{producer.airflow['dag_id']}/{producer.airflow['task_id']}"
        assert dataset.facets["version"].datasetVersion == first.snapshot_id
        assert {f.name: f.type for f in dataset.facets["schema"].fields} == COLUMNS


def test_a_derived_snapshot_gets_its_recorded_tables_as_schema_and_its_code_digest(store, tmp_path):
    from airflow_mlops.operators import SparkETLOperator
    from airflow_mlops.operators._lineage import SnapshotUse, TaskLineage

    (tmp_path / "out" / "a").mkdir(parents=True)
    (tmp_path / "out" / "a" / "part-00000.parquet").write_bytes(b"not read: the record has the tables")
    tables = {"a": {"rows": 1, "files": 1, "schema": {"k": "string", "n": "int64"}},
              "b": {"rows": 1, "files": 1, "schema": {"k": "string"}}}
    record = store.snapshot(tmp_path / "out", airflow={"dag_id": "d", "run_id": "r", "task_id": "etl"},
                            extra={"tables": tables})
    lineage = TaskLineage({"dag_id": "d", "run_id": "r"}, outputs=[SnapshotUse(record.uri, record=record)],
                          run={"codeDigests": {"transform": "ab12"}})
    result = facets(SparkETLOperator(task_id="etl", inputs={"x": "y"}, transform="m:f"), lineage)

    (dataset,) = result.outputs
    assert (dataset.namespace, dataset.name) == ("file", f"{tmp_path / 'store'}/d/etl")  # OpenLineage's naming
    schema = {f.name: (f.type, {c.name: c.type for c in f.fields}) for f in dataset.facets["schema"].fields}
    assert schema == {"a": ("struct", {"k": "string", "n": "int64"}), "b": ("struct", {"k": "string"})}
    assert result.run_facets["airflowMlops"].codeDigests == {"transform": "ab12"}


def test_lineage_that_cannot_be_read_is_left_out_with_a_warning_and_never_fails(tmp_path, capsys):
    from airflow_mlops.lineage.datasets import DatasetRef
    from airflow_mlops.operators import BatchPredictOperator
    from airflow_mlops.operators._lineage import SnapshotUse, TaskLineage

    operator = BatchPredictOperator(task_id="score", model="models:/m/1", input_snapshot="x", key_columns=["id"])
    assert facets(operator, None).inputs == []  # execute never started: an empty lineage

    gone = SnapshotUse(f"{tmp_path / 'no-store'}#{'ab' * 32}")
    model = DatasetRef("sqlite:///mlflow.db", "models/m", "1")
    result = facets(operator, TaskLineage({"dag_id": "d", "run_id": "r"}, inputs=[gone, model]))
    assert [(d.name, d.facets["version"].datasetVersion) for d in result.inputs] == [("models/m", "1")]
    assert "OpenLineage: leaving out" in capsys.readouterr().out  # Airflow's task logger writes to stdout here
    assert operator.get_openlineage_facets_on_failure(None).inputs == result.inputs


def test_openlineage_stays_off_without_a_configured_transport(tmp_path):
    env = {key: value for key, value in os.environ.items() if "OPENLINEAGE" not in key}
    env["AIRFLOW_HOME"] = str(tmp_path)
    probe = "from airflow.providers.openlineage import conf; print(conf.is_disabled())"
    result = subprocess.run([str(VENV_BIN / "python"), "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_snapshot_datasets_follow_openlineage_naming_for_local_and_s3_stores():
    from types import SimpleNamespace

    from airflow_mlops.lineage.datasets import snapshot_dataset

    def named(store, source="/data/raw", airflow=None):
        record = SimpleNamespace(store=store, source=source, airflow=airflow, snapshot_id="ab" * 32)
        ref = snapshot_dataset(record)
        return ref.namespace, ref.name

    by_task = {"dag_id": "d", "task_id": "t"}
    assert named("s3://user:secret@bucket/team/store/", airflow=by_task) == ("s3://bucket", "team/store/d/t")
    assert named("/srv/store", airflow=by_task) == ("file", "/srv/store/d/t")
    assert named("/srv/store") == ("file", "/data/raw")  # taken outside Airflow: its source is the dataset
    assert named("s3://bucket/x", source="s3://landing/2026/") == ("s3://landing", "2026")
