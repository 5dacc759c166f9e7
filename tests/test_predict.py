"""Batch prediction: alias pinned at start, the same predictions and snapshot on pandas and Spark, signature checks;
the champion served by MLflow's own server answers the same."""

from __future__ import annotations

import logging
import os
import subprocess

import numpy as np
import pytest

from airflow_mlops.predict import PredictError, PredictInput, batch_predict, resolve_model
from airflow_mlops.snapshots import SnapshotStore
from airflow_mlops.tracking.data import load_table
from tests.conftest import VENV_BIN, free_port, stop_process, wait_for_port
from tests.task_process import run_task

FEATURES = [f"f{i}" for i in range(5)]
NAME = "fraud-scorer"


def scoring_frame(rows: int = 300):
    """Feature rows with an int64 key in shuffled order, so the output must be sorted to be reproducible."""
    import pandas as pd
    from sklearn.datasets import make_classification

    X, _ = make_classification(n_samples=rows, n_features=5, random_state=1)
    frame = pd.DataFrame(X, columns=FEATURES)
    frame.insert(0, "id", np.random.default_rng(0).permutation(rows).astype("int64"))
    return frame


def snapshot_of(frame, tmp_path, name="scoring"):
    """``frame`` as a Parquet file snapshotted into the input store under ``tmp_path``."""
    folder = tmp_path / name
    folder.mkdir()
    frame.to_parquet(folder / "rows.parquet", index=False)
    return SnapshotStore.open(str(tmp_path / "input_store")).snapshot(folder)


@pytest.fixture
def registered(embedded_client):
    """Two versions of a registered classifier on the embedded store; ``champion`` names version 1."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=400, n_features=5, random_state=0)
    X = pd.DataFrame(X, columns=FEATURES)
    embedded_client.create_registered_model(NAME)
    models = {}
    for fit_rows in (400, 20):  # version 2 learns from a few rows, so the versions disagree on some
        model = LogisticRegression().fit(X[:fit_rows], y[:fit_rows])
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)))
        version = embedded_client.create_model_version(NAME, info.model_uri, run_id=run.info.run_id)
        models[str(version.version)] = (model, run.info.run_id)
    embedded_client.set_registered_model_alias(NAME, "champion", "1")
    return embedded_client, models


def predict_task(tmp_path, input_uri, **arguments):
    from airflow_mlops.operators import BatchPredictOperator

    return run_task(BatchPredictOperator, dag_id="scoring", run_id="manual__1", task_id="predict",
                    model=f"models:/{NAME}@champion", input_snapshot=input_uri, key_columns=["id"],
                    store=str(tmp_path / "predictions"), **arguments)


def scored(tmp_path, snapshot_id):
    store = SnapshotStore.open(str(tmp_path / "predictions"))
    return load_table(store.materialize(snapshot_id, tmp_path / f"restored-{snapshot_id[:8]}"))


def test_pandas_path_scores_like_the_model_and_the_record_names_the_resolved_version(registered, tmp_path, airflow_home):
    _, models = registered
    frame = scoring_frame()
    source = snapshot_of(frame, tmp_path)
    outcome = predict_task(tmp_path, source.uri)
    result = outcome["result"]
    model, run_id = models["1"]

    assert result["rows"] == len(frame) and result["model_name"] == NAME and result["model_version"] == "1"
    assert result["model_uri"] == f"models:/{NAME}/1" and result["run_id"] == run_id
    output = scored(tmp_path, result["snapshot_id"])
    assert list(output.columns) == ["id", "prediction"] and output["id"].is_monotonic_increasing
    expected = frame.assign(prediction=model.predict(frame[FEATURES])).sort_values("id", ignore_index=True)
    assert (output["prediction"].to_numpy() == expected["prediction"].to_numpy()).all()

    (record,) = SnapshotStore.open(str(tmp_path / "predictions")).records()
    assert record.snapshot_id == result["snapshot_id"] and record.parents == [source.snapshot_id]
    assert record.extra["model"] == {"model_uri": f"models:/{NAME}/1", "name": NAME, "version": "1",
                                     "run_id": run_id, "alias": "champion"}
    assert record.extra["prediction"] == {"engine": "pandas"}
    assert outcome["asset_events"]["x-airflow-mlops-snapshot://scoring/predict"]["model_version"] == "1"
    assert not list((airflow_home / "airflow_mlops" / "predict-staging").iterdir())


def test_spark_path_gives_the_same_predictions_and_snapshot_id_as_pandas(registered, tmp_path, airflow_home):
    # The operator starts and stops its own local[*] session (the shared ``spark`` fixture's would be stopped
    # with it); py4j logs at interpreter exit, after pytest closed its streams: keep its INFO chatter out.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    _, models = registered
    frame = scoring_frame()
    source = snapshot_of(frame, tmp_path)
    on_pandas = predict_task(tmp_path, source.uri)["result"]
    on_spark = predict_task(tmp_path, source.uri, spark_conn_id=None, spark_threshold_bytes=0)["result"]

    assert on_spark == on_pandas  # same rows: same snapshot id, same model version
    records = {record.extra["prediction"]["engine"]: record
               for record in SnapshotStore.open(str(tmp_path / "predictions")).records()}
    assert records["spark"].extra["prediction"]["master"].startswith("local")
    output = scored(tmp_path, on_spark["snapshot_id"]).set_index("id")
    expected = frame.set_index("id").assign(prediction=models["1"][0].predict(frame[FEATURES]))
    assert (output["prediction"] == expected["prediction"].reindex(output.index)).all()
    assert not list((airflow_home / "airflow_mlops" / "predict-staging").iterdir())


def test_moving_the_alias_after_resolution_does_not_change_the_version_that_scores(registered, tmp_path):
    client, models = registered
    frame = scoring_frame()
    source = snapshot_of(frame, tmp_path)
    path = SnapshotStore.open(str(tmp_path / "input_store")).materialize(source.snapshot_id, tmp_path / "in")

    resolved = resolve_model(client, f"models:/{NAME}@champion")
    client.set_registered_model_alias(NAME, "champion", "2")  # promoted while the task runs
    record, rows = batch_predict(SnapshotStore.open(str(tmp_path / "predictions")),
                                 PredictInput(path, source.snapshot_id, source.uri), resolved,
                                 key_columns=["id"], staging_root=tmp_path / "staging")

    assert rows == len(frame) and record.extra["model"]["version"] == "1"
    assert resolve_model(client, f"models:/{NAME}@champion").version == "2"
    output = scored(tmp_path, record.snapshot_id)
    ordered = frame.sort_values("id", ignore_index=True)[FEATURES]
    v1, v2 = (models[version][0].predict(ordered) for version in ("1", "2"))
    assert (v1 != v2).any()  # the versions disagree somewhere, so the check below tells them apart
    assert (output["prediction"].to_numpy() == v1).all()


def test_a_signature_mismatch_names_every_bad_column_and_writes_nothing(registered, tmp_path, airflow_home):
    frame = scoring_frame().drop(columns=["f1"]).assign(f3=lambda data: data["f3"].astype(str))
    source = snapshot_of(frame, tmp_path)

    with pytest.raises(PredictError) as failure:
        predict_task(tmp_path, source.uri)

    message = str(failure.value)
    assert "\n" not in message and "missing columns f1" in message
    assert "mistyped columns f3 (model expects double" in message
    assert not (tmp_path / "predictions").exists() or not SnapshotStore.open(str(tmp_path / "predictions")).records()
    assert not list((airflow_home / "airflow_mlops" / "predict-staging").iterdir())


def test_an_unknown_alias_or_a_malformed_model_reference_fails_in_one_line(registered):
    client, _ = registered
    with pytest.raises(PredictError, match=f"models:/{NAME}@nobody not found"):
        resolve_model(client, f"models:/{NAME}@nobody")
    with pytest.raises(PredictError, match="is not models:/NAME@ALIAS"):
        resolve_model(client, "s3://bucket/model")
    assert resolve_model(client, {"model_uri": "runs:/abc/model"}).run_id == "abc"


def test_the_served_champion_answers_like_batch_prediction(registered, tmp_path, embedded_client):
    """``mlflow models serve -m models:/NAME@champion`` on loopback: /invocations agrees with the operator's snapshot."""
    import requests

    frame = scoring_frame(120)
    source = snapshot_of(frame, tmp_path)
    batch = scored(tmp_path, predict_task(tmp_path, source.uri)["result"]["snapshot_id"]).set_index("id")

    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        # the server runs ``uvicorn`` from the PATH: the virtualenv's, as in an activated environment
        env={**os.environ, "MLFLOW_TRACKING_URI": embedded_client.tracking_uri,
             "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for_port(port, timeout=120, process=server), (tmp_path / "serve.log").read_text()[-2000:]
        rows = frame.sample(frac=1, random_state=3)
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=60,
                               json={"dataframe_split": rows[FEATURES].to_dict(orient="split", index=False)})
        answer.raise_for_status()
    finally:
        stop_process(server)
        log.close()
    served = np.asarray(answer.json()["predictions"])
    assert len(served) == len(rows)
    assert (served == batch["prediction"].reindex(rows["id"]).to_numpy()).all()


def test_the_output_bytes_do_not_depend_on_how_the_rows_were_chunked(tmp_path):
    """Spark's rows come back in chunks, pandas' in one: with more distinct keys than a dictionary page holds,
    the Parquet encoding must still be the same (it was not, at 1M rows, before the chunks were combined)."""
    import pyarrow as pa

    from airflow_mlops.predict.batch import _arrow_table, _write_canonical

    rows = 1_000_000
    whole = pa.table({"id": np.arange(rows, dtype="int64"), "prediction": np.arange(rows, dtype="int64") % 2})
    chunked = pa.concat_tables([whole.slice(start, 65_536) for start in range(0, rows, 65_536)])
    for name, table in {"whole": whole, "chunked": chunked}.items():
        _write_canonical(_arrow_table(table), tmp_path / f"{name}.parquet")
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "chunked.parquet").read_bytes()
