"""MlflowTrainOperator: what a run records, retries after real process kills, bad input, links, secrets."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from airflow_mlops.errors import MlopsError
from airflow_mlops.snapshots import SnapshotStore
from tests.task_process import attempt_config, run_attempt, run_in_process, runs_of


@pytest.fixture
def dag_file(tmp_path) -> Path:
    """A DAG file in a git checkout, as teams deploy their DAG folder."""
    repo = tmp_path / "dags_repo"
    repo.mkdir()
    dag = repo / "retrain.py"
    dag.write_text("# the DAG that trains\n")
    git = ["git", "-C", str(repo), "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "dags"], check=True)
    return dag


def test_a_run_records_data_code_params_environment_and_airflow_context(tmp_path, snapshot, dag_file, embedded_client):
    import mlflow
    import pandas as pd

    store, record = snapshot
    config = attempt_config(
        tmp_path, record.uri, 1, estimator="sklearn.ensemble.RandomForestClassifier",
        hyperparams='{"n_estimators": 20, "max_depth": 4}', seed=7,
    )
    config["dag_file"] = str(dag_file)
    outcome = run_attempt(config)
    result = outcome["result"]

    client = embedded_client
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["n_estimators"] == "20" and run.data.params["max_depth"] == "4"
    assert run.data.params["seed"] == "7" and run.data.params["estimator"] == "RandomForestClassifier"
    for metric in ("accuracy_score", "f1_score", "roc_auc", "precision_score", "recall_score"):
        assert 0.5 < run.data.metrics[metric] <= 1.0
    assert result["metrics"]["accuracy_score"] == run.data.metrics["accuracy_score"]

    tags = run.data.tags
    assert tags["airflow.dag_id"] == "retrain" and tags["airflow.run_id"] == "scheduled__2026-01-01T00:00:00+00:00"
    assert tags["airflow.logical_date"] == "2026-01-01T00:00:00+00:00"
    assert tags["airflow.task_id"] == "train" and tags["airflow.try_number"] == "1" and tags["airflow.map_index"] == "-1"
    assert tags["airflow_mlops.snapshot_id"] == record.snapshot_id
    head = subprocess.run(["git", "-C", str(dag_file.parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert tags["airflow_mlops.git_dirty"] == "false"
    assert len(tags["airflow_mlops.dag_file_digest"]) == 64
    assert tags["airflow_mlops.python_version"].startswith("3.11") and int(tags["airflow_mlops.cpu_count"]) >= 1

    (dataset_input,) = [
        i for i in run.inputs.dataset_inputs if {t.key: t.value for t in i.tags}.get("mlflow.data.context") == "training"
    ]
    assert dataset_input.dataset.digest == record.snapshot_id[:32]
    assert dataset_input.dataset.name == f"snapshot:{record.snapshot_id}"

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"environment", "code"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "code/dag")] == ["code/dag/retrain.py"]
    requirements = Path(client.download_artifacts(run.info.run_id, "environment/requirements.txt", str(tmp_path)))
    assert "scikit-learn==1.9.1" in requirements.read_text()
    plots = " ".join(a.path for a in client.list_artifacts(run.info.run_id))
    assert "confusion_matrix" in plots and "roc_curve" in plots

    model = mlflow.pyfunc.load_model(result["model_uri"])
    assert model.metadata.signature is not None
    table = pd.read_csv(store.materialize(record.snapshot_id, tmp_path / "restored") / "train.csv")
    assert len(model.predict(table.drop(columns=["label"]))) == 400
    assert outcome["xcom"]["_link_MlflowRunLink"] == (
        f"http://127.0.0.1:5000/#/experiments/{result['experiment_id']}/runs/{result['run_id']}"
    )


def test_a_regressor_is_evaluated_with_regression_metrics_and_residuals(tmp_path, snapshot, embedded_client):
    _, record = snapshot
    result = run_attempt(
        attempt_config(tmp_path, record.uri, 1, estimator="sklearn.linear_model.Ridge", features=["f1", "f2", "f3"])
    )["result"]
    assert {"r2_score", "mean_absolute_error", "root_mean_squared_error"} <= set(result["metrics"])
    assert "residuals.png" in {a.path for a in embedded_client.list_artifacts(result["run_id"])}


def test_a_training_run_shows_no_mlflow_hint_it_can_avoid(tmp_path, snapshot, embedded_client):
    """Neither the dataset-source guess nor the integer-label hint: the task log shows our lines."""
    import warnings

    _, record = snapshot
    run_attempt(attempt_config(tmp_path, record.uri, 1, estimator="sklearn.linear_model.LogisticRegression"))
    with warnings.catch_warnings(record=True) as seen:  # after a first run has set up Airflow's and MLflow's logging
        warnings.simplefilter("always")
        run_attempt(attempt_config(tmp_path, record.uri, 1, estimator="sklearn.linear_model.LogisticRegression",
                                   seed=1))
    shown = [str(w.message)[:80] for w in seen if issubclass(w.category, UserWarning) and "mlflow" in w.filename]
    assert shown == []


@pytest.mark.postgres
def test_retry_after_the_task_process_is_killed_mid_training(tmp_path, snapshot, mlflow_conn, markers):
    from airflow_mlops.hooks.mlflow import MlflowHook

    _, record = snapshot
    first = run_in_process(attempt_config(
        tmp_path, record.uri, 1, train_fn="tests.train_functions:train_until_killed", mlflow_conn_id=mlflow_conn
    ))
    deadline = time.monotonic() + 120
    while not (markers / "started").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (markers / "started").exists(), Path(tmp_path / "attempt-1.log").read_text()[-3000:]
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL

    retry = attempt_config(tmp_path, record.uri, 2, train_fn="tests.train_functions:counting_train", mlflow_conn_id=mlflow_conn)
    result = run_attempt(retry)["result"]

    with MlflowHook(mlflow_conn).tracking_session() as client:
        runs = {run.info.run_id: run for run in runs_of(client, tmp_path.name)}
    finished = [r for r in runs.values() if r.info.status == "FINISHED"]
    failed = [r for r in runs.values() if r.info.status == "FAILED"]
    assert [r.info.run_id for r in finished] == [result["run_id"]]
    assert len(failed) == 1 and "abandoned" in failed[0].data.tags["airflow_mlops.error"]
    assert failed[0].data.tags["airflow.try_number"] == "1" and finished[0].data.tags["airflow.try_number"] == "2"


@pytest.mark.postgres
def test_retry_after_a_crash_post_logging_returns_the_finished_run(tmp_path, snapshot, mlflow_conn, markers):
    from airflow_mlops.hooks.mlflow import MlflowHook

    _, record = snapshot
    config = attempt_config(tmp_path, record.uri, 1, train_fn="tests.train_functions:counting_train", mlflow_conn_id=mlflow_conn)
    config["die_before_xcom_push"] = True
    first = run_in_process(config)
    assert first.wait(timeout=300) == -signal.SIGKILL
    assert not Path(config["output"]).exists()

    retry = run_attempt(attempt_config(
        tmp_path, record.uri, 2, train_fn="tests.train_functions:counting_train", mlflow_conn_id=mlflow_conn
    ))
    with MlflowHook(mlflow_conn).tracking_session() as client:
        runs = runs_of(client, tmp_path.name)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(retry["result"]["run_id"], "FINISHED")]
    assert (markers / "calls").read_text().count("call") == 1  # not trained again
    assert retry["result"]["metrics"]["train_rows"] == 320.0
    assert retry["xcom"]["_link_MlflowRunLink"].endswith(f"/runs/{retry['result']['run_id']}")


def test_a_task_cleared_after_new_data_trains_again_and_supersedes_its_old_run(tmp_path, snapshot, embedded_client, markers):
    """A retry reuses a finished run only if it was made from the same snapshot and training definition."""
    import pandas as pd

    store, record = snapshot
    table = pd.read_csv(store.materialize(record.snapshot_id, tmp_path / "restored") / "train.csv")
    newer = write_table(tmp_path, "newer", table.iloc[:300])
    train = {"train_fn": "tests.train_functions:counting_train"}
    first = run_attempt(attempt_config(tmp_path, record.uri, 1, **train))["result"]
    cleared = run_attempt(attempt_config(tmp_path, newer, 2, **train))["result"]  # upstream re-ran: new snapshot
    assert cleared["run_id"] != first["run_id"] and cleared["metrics"]["train_rows"] == 240.0
    old, new = embedded_client.get_run(first["run_id"]), embedded_client.get_run(cleared["run_id"])
    assert old.data.tags["airflow_mlops.superseded_by"] == new.info.run_id
    assert new.data.tags["airflow_mlops.snapshot_id"] != old.data.tags["airflow_mlops.snapshot_id"]
    assert "airflow_mlops.superseded_by" not in new.data.tags

    again = run_attempt(attempt_config(tmp_path, newer, 3, **train))["result"]  # a plain retry: same inputs
    assert again["run_id"] == cleared["run_id"]
    other_params = run_attempt(attempt_config(tmp_path, newer, 4, hyperparams={"C": 0.1}, **train))["result"]
    assert other_params["run_id"] != cleared["run_id"]  # changed hyperparams are other inputs too
    assert (markers / "calls").read_text().count("call") == 3


def write_table(tmp_path, name, frame):
    folder = tmp_path / name
    folder.mkdir()
    frame.to_csv(folder / "data.csv", index=False)
    return SnapshotStore.open(str(tmp_path / "store")).snapshot(folder).uri


def test_bad_input_fails_with_one_clear_message_before_any_run(tmp_path, snapshot, embedded_client):
    import pandas as pd
    from airflow.sdk.exceptions import AirflowFailException

    store, record = snapshot
    text_features = write_table(tmp_path, "text", pd.DataFrame({"city": ["a", "b"] * 20, "x": range(40), "label": [0, 1] * 20}))
    nan_target = write_table(tmp_path, "nan", pd.DataFrame({"x": range(40), "label": [0, 1, None, 1] * 10}))
    four_rows = write_table(tmp_path, "four", pd.DataFrame({"x": range(4), "label": [0, 1, 0, 1]}))
    one_class = write_table(tmp_path, "one", pd.DataFrame({"x": range(40), "label": [1] * 40}))
    cases = [
        ({"input_snapshot": four_rows}, "input_snapshot has 4 rows: too few for test_size=0.2 with 2 classes of 'label' "
                                        "(it needs at least 10 rows, so that each part holds every class)"),
        ({"input_snapshot": one_class}, "target 'label' has a single class in the 40 rows of input_snapshot"),
        ({"input_snapshot": f"{store.uri}#0123456789abcdef"}, "unknown snapshot id 0123456789abcdef"),
        ({"target": "is_fraud"}, "target column 'is_fraud' not in the data"),
        ({"input_snapshot": text_features}, "non-numeric feature columns ['city']"),
        ({"input_snapshot": nan_target}, "target column 'label' has 10 missing (NaN) values"),
        ({"hyperparams": {"n_estimators": -3, "no_such_param": 1}}, "do not fit estimator"),
        ({"input_snapshot": f"{store.uri}#0123456789abcdef"}, f"input_snapshot='{store.uri}#0123456789abcdef': "),
        ({"hyperparams": "{not json"}, "hyperparams is not valid JSON"),
    ]
    for overrides, message in cases:
        config = attempt_config(tmp_path, record.uri, 1, estimator="sklearn.ensemble.RandomForestClassifier")
        config["operator"].update(overrides)
        with pytest.raises(MlopsError) as raised:
            run_attempt(config)
        assert message in str(raised.value) and "\n" not in str(raised.value)
        assert isinstance(raised.value, AirflowFailException), (message, type(raised.value))  # no retry: it cannot work
    assert runs_of(embedded_client, tmp_path.name) == []


def test_templated_values_are_taken_as_given_or_as_rendered_text():
    from airflow_mlops.utils.templated import as_flag, as_float, as_int, as_mapping

    assert as_mapping({"C": 1}, "hyperparams") == {"C": 1} and as_mapping('{"C": 1}', "hyperparams") == {"C": 1}
    assert as_mapping(None, "hyperparams") == {} == as_mapping("", "hyperparams")
    assert as_flag(True, "dry_run") is True and as_flag("False", "dry_run") is False and as_flag(" true ", "dry_run")
    assert as_int(5, "n_trials") == 5 == as_int("5", "n_trials") == as_int(5.0, "n_trials")
    assert as_float("0.25", "min_improvement") == 0.25 == as_float(0.25, "min_improvement")
    for coerce, value, message in [
        (as_mapping, "[1, 2]", "hyperparams must be a mapping of names to values, got list"),
        (as_mapping, "{", "hyperparams is not valid JSON"),
        (as_flag, "yes", "hyperparams must be true or false, got 'yes'"),
        (as_int, "5.5", "hyperparams must be a whole number, got '5.5'"),
        (as_int, True, "hyperparams must be a whole number, got True"),
        (as_float, "much", "hyperparams must be a number, got 'much'"),
        (as_float, False, "hyperparams must be a number, got False"),
    ]:
        with pytest.raises(MlopsError, match=message):
            coerce(value, "hyperparams")


def test_a_failing_training_function_ends_its_run_failed_with_the_message(tmp_path, snapshot, embedded_client):
    _, record = snapshot
    with pytest.raises(MlopsError, match="training failed in run .*: ValueError: learning rate 10.0 diverged"):
        run_attempt(attempt_config(tmp_path, record.uri, 1, train_fn="tests.train_functions:failing_train"))
    (run,) = runs_of(embedded_client, tmp_path.name)
    assert run.info.status == "FAILED"
    assert run.data.tags["airflow_mlops.error"] == "ValueError: learning rate 10.0 diverged at epoch 3"


def test_run_link_points_at_the_configured_ui(monkeypatch):
    from airflow_mlops.hooks.mlflow import MlflowHook

    conn = {"conn_type": "mlflow", "host": "mlflow.internal", "port": 443, "schema": "https",
            "extra": {"ui_url": "https://mlflow.example.com/"}}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_PROD", json.dumps(conn))
    hook = MlflowHook("mlflow_prod")
    assert hook.settings.tracking_uri == "https://mlflow.internal:443"
    assert hook.run_url("12", "abc") == "https://mlflow.example.com/#/experiments/12/runs/abc"


def test_a_spark_ml_pipeline_is_logged_with_the_spark_flavor(tmp_path, snapshot, embedded_client, spark):
    import mlflow

    _, record = snapshot
    result = run_attempt(
        attempt_config(tmp_path, record.uri, 1, train_fn="tests.train_functions:spark_pipeline", hyperparams={"max_iter": 5})
    )["result"]
    run = embedded_client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["max_iter"] == "5"
    assert result["metrics"] == {"train_rows": 320.0}
    flavors = mlflow.models.get_model_info(result["model_uri"]).flavors
    assert "spark" in flavors and "python_function" in flavors
