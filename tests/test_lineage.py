"""Lineage: the walk both ways over snapshots, MLflow runs and model versions, its three formats and CLI,
reads bounded by the path (counted, not timed) in a store of 1,000 records, and the index rebuilt for old stores.

One pipeline is built once for the module with the real operators (snapshot, tune, train, register and
gate, batch predict; the ETL step through ``derive_snapshot`` with pandas instead of a Spark session),
plus a run superseded by the training run and one a killed attempt abandoned.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_mlops.cli import main
from airflow_mlops.lineage.datasets import snapshot_dataset
from airflow_mlops.lineage.walk import LineageWalker
from airflow_mlops.lineage.render import render
from airflow_mlops.snapshots import SnapshotRecord, SnapshotStore
from airflow_mlops.snapshots.backends import LocalBackend
from airflow_mlops.snapshots.index import INDEX_MARKER_KEY
from airflow_mlops.tracking.runs import fail_abandoned_runs, identity_tags, supersede
from airflow_mlops.tracking.tags import SNAPSHOT_TAG
from tests.task_process import run_task

NAME = "fraud_detection"
FEATURES = [f"f{i}" for i in range(4)]
DAG = {"dag_id": "retrain", "run_id": "manual__2026-01-01"}


def to_features(frame):
    """The ETL step's transformation (pandas here; a Spark transform in the example DAG)."""
    return frame.assign(f0=frame["f0"].round(6))


def _task(task_id: str, try_number: int = 1) -> dict:
    return {**DAG, "task_id": task_id, "map_index": -1, "try_number": try_number}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """raw snapshot -> features snapshot -> tuning + training runs -> version 1 (champion) -> predictions."""
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    from airflow_mlops.embedded import embedded_tracking_store
    from airflow_mlops.etl.spark import EtlInput, code_identity, derive_snapshot
    from airflow_mlops.operators import (
        BatchPredictOperator,
        DataSnapshotOperator,
        MlflowTrainOperator,
        OptunaTuneOperator,
        RegisterModelOperator,
    )

    home = tmp_path_factory.mktemp("lineage_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(home))
        patch.delenv("AIRFLOW_MLOPS_STORE", raising=False)
        store_uri = str(home / "store")
        X, y = make_classification(n_samples=300, n_features=4, random_state=0)
        raw_folder = home / "raw"
        raw_folder.mkdir()
        pd.DataFrame(X, columns=FEATURES).assign(id=np.arange(300), label=y).to_csv(raw_folder / "t.csv", index=False)
        raw = run_task(DataSnapshotOperator, **DAG, task_id="snapshot_raw", source=str(raw_folder), store=store_uri)["result"]

        store = SnapshotStore.open(store_uri)
        raw_path = store.materialize(raw["snapshot_id"], home / "restored")

        def write(output: Path) -> None:
            output.mkdir(parents=True)
            to_features(pd.read_csv(raw_path / "t.csv")).to_parquet(output / "part-00000.parquet", index=False)

        features, _ = derive_snapshot(store, [EtlInput("transactions", raw_path, raw["snapshot_id"], raw["uri"])], write,
                                      staging_root=home / "staging", code=code_identity(to_features),
                                      airflow=_task("customer_features"))
        model = {"input_snapshot": features.uri, "target": "label", "features": FEATURES, "store": store_uri,
                 "estimator": "sklearn.linear_model.LogisticRegression", "experiment_name": NAME}
        tune = run_task(OptunaTuneOperator, **DAG, task_id="tune", n_trials=2, cv=2,
                        search_space={"C": {"type": "float", "low": 0.1, "high": 10, "log": True}}, **model)
        train = run_task(MlflowTrainOperator, **DAG, task_id="train", hyperparams=tune["xcom"]["best_params"], **model)["result"]
        register = run_task(RegisterModelOperator, **DAG, task_id="register", model_name=NAME, training=train,
                            store=store_uri)["result"]
        predict = run_task(BatchPredictOperator, **DAG, task_id="score", model=f"models:/{NAME}@champion",
                           input_snapshot=features.uri, key_columns=["id"], store=store_uri)["result"]

        tracking_uri = embedded_tracking_store()
        client = mlflow.MlflowClient(tracking_uri, tracking_uri)
        experiment_id = train["experiment_id"]
        earlier = client.create_run(experiment_id, tags={**identity_tags(_task("train")), SNAPSHOT_TAG: features.snapshot_id})
        client.set_terminated(earlier.info.run_id)
        supersede(client, [earlier.info.run_id], train["run_id"])
        killed = client.create_run(experiment_id, tags={**identity_tags(_task("train", 2)), SNAPSHOT_TAG: features.snapshot_id})
        fail_abandoned_runs(client, [killed.info.run_id], 3)

    assert register["decision"] == "champion" and register["version"] == "1"
    return SimpleNamespace(
        store=store_uri, tracking_uri=tracking_uri, raw=raw["snapshot_id"], features=features.snapshot_id,
        predictions=predict["snapshot_id"], tuning_run=tune["result"]["parent_run_id"], training_run=train["run_id"],
        superseded_run=earlier.info.run_id, abandoned_run=killed.info.run_id,
    )


def walker(pipeline, store: SnapshotStore | None = None, client=None) -> LineageWalker:
    import mlflow

    client = client or mlflow.MlflowClient(pipeline.tracking_uri, pipeline.tracking_uri)
    return LineageWalker(store or SnapshotStore.open(pipeline.store), client)


def titles(tree: str) -> list[str]:
    """The node titles of a rendered tree, top to bottom (history lines left out)."""
    stripped = (re.sub(r"^[│├└─ ]*", "", line) for line in tree.splitlines())
    return [line.split("  ")[0] for line in stripped if not line.startswith("history")]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_from_the_champion_alias_upstream_to_the_raw_snapshot_and_down_to_the_predictions(pipeline):
    lineage = walker(pipeline).walk(f"models:/{NAME}@champion")

    focus = lineage.nodes[lineage.focus]
    assert lineage.focus == f"model_version:{NAME}/1"
    assert focus.data["aliases"] == ["champion"] and focus.data["run_id"] == pipeline.training_run
    assert focus.data["gate"]["decision"] == "champion" and focus.data["gate"]["metric"] == "roc_auc"
    assert [(e["action"], e["alias"], e["to_version"]) for e in focus.data["history"]] == [("gate", "champion", "1")]
    assert focus.data["airflow"]["task_id"] == "register" and focus.data["airflow"]["try_number"] == 1
    upstream = {n.id for n in lineage.nodes.values() if n.direction == "upstream"}
    downstream = {n.id for n in lineage.nodes.values() if n.direction == "downstream"}
    assert upstream == {f"snapshot:{pipeline.raw}", f"snapshot:{pipeline.features}", f"run:{pipeline.training_run}"}
    assert downstream == {f"snapshot:{pipeline.predictions}"}
    assert {(e.source, e.target, e.relation) for e in lineage.edges} == {
        (f"snapshot:{pipeline.raw}", f"snapshot:{pipeline.features}", "derived"),
        (f"snapshot:{pipeline.features}", f"run:{pipeline.training_run}", "input"),
        (f"run:{pipeline.training_run}", f"model_version:{NAME}/1", "registered"),
        (f"model_version:{NAME}/1", f"snapshot:{pipeline.predictions}", "scored"),
    }
    raw = lineage.nodes[f"snapshot:{pipeline.raw}"].data
    assert raw["role"] == "raw" and raw["airflow"]["task_id"] == "snapshot_raw" and raw["time"]


def test_from_the_raw_snapshot_down_to_every_run_version_and_prediction_superseded_and_failed_runs_shown(pipeline):
    lineage = walker(pipeline).walk(pipeline.raw[:10])

    assert lineage.focus == f"snapshot:{pipeline.raw}"
    assert {n.direction for n in lineage.nodes.values()} == {"focus", "downstream"}
    runs = {n.data["run_id"]: n.data for n in lineage.nodes.values() if n.kind == "run"}
    assert set(runs) == {pipeline.tuning_run, pipeline.training_run, pipeline.superseded_run, pipeline.abandoned_run}
    tuning = runs[pipeline.tuning_run]
    assert tuning["type"] == "tuning" and tuning["snapshot_id"] == pipeline.features
    assert tuning["study"]["n_complete_trials"] == 2 and "roc_auc" in tuning["study"]["best"]
    assert runs[pipeline.training_run]["type"] == "training" and runs[pipeline.training_run]["airflow"]["task_id"] == "train"
    assert runs[pipeline.superseded_run]["superseded_by"] == pipeline.training_run
    assert runs[pipeline.abandoned_run]["status"] == "FAILED" and "abandoned" in runs[pipeline.abandoned_run]["error"]
    predictions = lineage.nodes[f"snapshot:{pipeline.predictions}"].data
    assert predictions["role"] == "predictions" and predictions["model"]["version"] == "1"
    assert (f"model_version:{NAME}/1", f"snapshot:{pipeline.predictions}", "scored") in {
        (e.source, e.target, e.relation) for e in lineage.edges}

    tree = render(lineage, "tree")
    lines = tree.splitlines()
    assert lines[0].startswith(f"snapshot {pipeline.raw[:12]}  raw ") and lines[0].endswith("◀")
    assert "retrain/manual__2026-01-01/snapshot_raw #1" in lines[0]
    assert lines[1].startswith(f"└─ snapshot {pipeline.features[:12]}  spark:tests.test_lineage:to_features")
    assert f"run {pipeline.tuning_run[:8]}  (tuning study " in tree
    assert f"run {pipeline.superseded_run[:8]}  (training)" in tree and f"[superseded by run {pipeline.training_run[:8]}]" in tree
    assert f"run {pipeline.abandoned_run[:8]}  (training) FAILED" in tree and "[error: abandoned" in tree
    model_line = next(line for line in lines if f"model {NAME} v1 [champion]" in line)
    assert "gate: champion (roc_auc " in model_line and "retrain/manual__2026-01-01/register #1" in model_line
    assert any("history #1" in line and "gate champion: - -> 1" in line for line in lines)
    scored = [line for line in lines if f"snapshot {pipeline.predictions[:12]}" in line]
    assert len(scored) == 2 and f"predictions by models:/{NAME}/1 via @champion" in scored[0]
    assert scored[1].endswith("(shown above)")  # also a child of the features snapshot: once in full


def test_a_middle_node_shows_ancestors_above_and_descendants_below(pipeline):
    lineage = walker(pipeline).walk(pipeline.training_run)

    directions = {n.id: n.direction for n in lineage.nodes.values()}
    assert directions == {f"snapshot:{pipeline.raw}": "upstream", f"snapshot:{pipeline.features}": "upstream",
                          f"run:{pipeline.training_run}": "focus", f"model_version:{NAME}/1": "downstream",
                          f"snapshot:{pipeline.predictions}": "downstream"}
    lines = render(lineage, "tree").splitlines()
    assert titles("\n".join(lines)) == [
        f"snapshot {pipeline.raw[:12]}", f"snapshot {pipeline.features[:12]}", f"run {pipeline.training_run[:8]}",
        f"model {NAME} v1 [champion]", f"snapshot {pipeline.predictions[:12]}"]
    assert next(line for line in lines if f"run {pipeline.training_run[:8]}" in line).endswith("◀")


def test_json_carries_datasets_and_dot_draws_every_node_and_edge(pipeline):
    lineage = walker(pipeline).walk(f"models:/{NAME}/1")
    document = json.loads(render(lineage, "json"))

    assert document["focus"] == f"model_version:{NAME}/1" and document["ref"] == f"models:/{NAME}/1"
    nodes = {node["id"]: node for node in document["nodes"]}
    assert list(nodes)[0] == f"snapshot:{pipeline.raw}"  # tree order: from the oldest ancestor
    store = SnapshotStore.open(pipeline.store)
    for snapshot_id in (pipeline.raw, pipeline.features, pipeline.predictions):
        node = nodes[f"snapshot:{snapshot_id}"]
        assert node["dataset"] == snapshot_dataset(store.records(snapshot_id)[0]).to_dict()
        assert node["dataset"]["version"] == snapshot_id and node["airflow"]["dag_id"] == "retrain"
    assert nodes[f"snapshot:{pipeline.raw}"]["dataset"]["name"] == f"{store.uri}/retrain/snapshot_raw"
    assert nodes[f"model_version:{NAME}/1"]["dataset"] == {
        "namespace": pipeline.tracking_uri, "name": f"models/{NAME}", "version": "1"}
    assert {(e["from"], e["to"], e["relation"]) for e in document["edges"]} == {
        (e.source, e.target, e.relation) for e in lineage.edges}

    dot = render(lineage, "dot")
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    for node_id in nodes:
        assert f'"{node_id}" [label="' in dot
    for edge in lineage.edges:
        assert f'"{edge.source}" -> "{edge.target}" [label="{edge.relation}"];' in dot
    assert 'fillcolor="#fff2b3"' in next(line for line in dot.splitlines() if line.startswith(f'  "model_version:{NAME}/1"'))
    assert dot.count("{") == dot.count("}")


def test_the_cli_prints_the_three_formats_and_fails_in_one_line_on_unknown_or_ambiguous_refs(pipeline, capsys):
    common = ("--store", pipeline.store, "--tracking-uri", pipeline.tracking_uri)
    code, out, _ = cli(capsys, "lineage", f"models:/{NAME}@champion", *common, "--format", "json")
    assert code == 0 and json.loads(out)["focus"] == f"model_version:{NAME}/1"
    code, out, _ = cli(capsys, "lineage", pipeline.predictions[:12], *common, "--format", "dot")
    assert code == 0 and out.startswith("digraph lineage {")

    backend = LocalBackend(pipeline.store)
    for twin in ("abcdef0", "abcdef1"):  # two snapshots sharing a six-character prefix
        record = SnapshotRecord(twin + "0" * 57, pipeline.store, "2026-01-01T00:00:00+00:00", 0, 0, "x", "h")
        backend.put_bytes(f"records/{record.snapshot_id}/1.json", json.dumps(record.__dict__).encode())
    bad_refs = {
        "abcdef": "ambiguous",
        "feedbeef": "unknown snapshot id feedbeef",
        f"/elsewhere#{pipeline.raw}": "give --store /elsewhere",
        "0" * 32: "is neither an MLflow run nor a snapshot",
        f"models:/{NAME}@nobody": "not found in the registry",
        "latest": "is not a snapshot id",
    }
    for ref, message in bad_refs.items():
        code, out, err = cli(capsys, "lineage", ref, *common)
        assert code == 2 and out == "", ref
        assert err.count("\n") == 1 and message in err, err
    code, out, _ = cli(capsys, "lineage", f"{pipeline.store}#{pipeline.raw}", *common)  # a snapshot URI, as in XCom
    assert code == 0 and out.splitlines()[0].startswith(f"snapshot {pipeline.raw[:12]}  raw ")


class Counting:
    """A proxy recording each method called through it: (name, its arguments as text, number of keys listed)."""

    def __init__(self, target) -> None:
        self._target = target
        self.calls: list[tuple[str, object, int]] = []

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            result = value(*args, **kwargs)
            if name == "list_keys":
                result = list(result)
            self.calls.append((name, repr((args, kwargs)), len(result) if name == "list_keys" else 1))
            return result

        return call


def test_a_walk_reads_only_the_records_on_its_path_among_1000_snapshots_and_many_runs(pipeline, tmp_path):
    """334 chains raw -> features -> predictions, 200 runs reading a features snapshot, versions for some of
    them (the pipeline's runs and versions are there too): reads are counted during walks of one chain."""
    import mlflow

    from airflow_mlops.snapshots.hashing import digest_bytes

    client = mlflow.MlflowClient(pipeline.tracking_uri, pipeline.tracking_uri)
    experiment = client.create_experiment("synthetic")
    client.create_registered_model("synthetic")
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "x").write_text("x")
    store_uri = SnapshotStore.open(str(tmp_path / "store")).snapshot(tmp_path / "seed").store
    backend = LocalBackend(store_uri)
    chains = []
    for i in range(334):  # 1,002 records
        raw, features, predictions = (digest_bytes(f"{kind}-{i}".encode()) for kind in ("raw", "features", "predictions"))
        tags = {SNAPSHOT_TAG: features, **identity_tags(_task(f"train_{i}"))}
        run = client.create_run(experiment, tags=tags).info.run_id if i < 200 else digest_bytes(b"no run")[:32]
        version = str(client.create_model_version("synthetic", f"runs:/{run}/model", run_id=run).version) if i < 15 else None
        model = ({"name": "synthetic", "version": version, "run_id": run, "model_uri": f"models:/synthetic/{version}"}
                 if version else {"run_id": run, "model_uri": f"runs:/{run}/model"})
        for snapshot_id, parents, extra in ((raw, [], {}), (features, [raw], {}), (predictions, [features], {"model": model})):
            record = SnapshotRecord(snapshot_id, store_uri, f"2026-02-01T00:00:{i % 60:02d}+00:00", 1, 10, f"s{i}", "h",
                                    airflow=_task(f"t{i}"), parents=parents, extra=extra)
            backend.put_bytes(f"records/{snapshot_id}/{i:020d}.json", json.dumps(record.__dict__).encode())
        chains.append((raw, features, predictions, run, version))
    assert SnapshotStore.open(store_uri).reindex() == 1003  # the records above were written without index keys

    raw, features, predictions, run, version = chains[7]
    path = {raw, features, predictions, run, f"synthetic/{version}"}
    counted_backend = Counting(LocalBackend(store_uri))
    store, again = SnapshotStore(counted_backend), SnapshotStore(counted_backend)
    counted_client = Counting(client)
    counted_backend.calls.clear()

    lineage = LineageWalker(store, counted_client).walk(raw)

    assert set(lineage.nodes) == {f"snapshot:{raw}", f"snapshot:{features}", f"snapshot:{predictions}", f"run:{run}",
                                  f"model_version:synthetic/{version}"}
    assert lineage.nodes[f"model_version:synthetic/{version}"].direction == "downstream"
    touched = [arguments for _, arguments, _ in counted_backend.calls if INDEX_MARKER_KEY not in arguments]
    assert all(any(part in arguments for part in path) for arguments in touched), touched
    assert len(counted_backend.calls) <= 5 * len(path), counted_backend.calls
    assert sum(listed for name, _, listed in counted_backend.calls if name == "list_keys") <= 3 * len(path)
    assert sum(1 for name, _, _ in counted_backend.calls if name == "get_bytes") == 3  # one record per snapshot
    mlflow_calls = [name for name, _, _ in counted_client.calls]
    assert len(mlflow_calls) <= 3 * len(path) and mlflow_calls.count("search_experiments") == 1, mlflow_calls
    assert all(any(part in arguments for part in path) for name, arguments, _ in counted_client.calls
               if name in ("search_runs", "search_model_versions")), counted_client.calls

    counted_backend.calls.clear()
    counted_client.calls.clear()
    upstream = LineageWalker(again, counted_client).walk(f"models:/synthetic/{version}")
    assert {n.id for n in upstream.nodes.values() if n.direction == "upstream"} == {
        f"snapshot:{raw}", f"snapshot:{features}", f"run:{run}"}
    assert all(any(part in arguments for part in path) for _, arguments, _ in counted_backend.calls
               if INDEX_MARKER_KEY not in arguments), counted_backend.calls
    assert len(counted_backend.calls) <= 5 * len(path) and len(counted_client.calls) <= 3 * len(path)


def test_an_old_store_without_index_gives_the_same_walk_once_reindexed(pipeline, capsys):
    before = render(walker(pipeline).walk(pipeline.raw), "json")
    index = Path(pipeline.store) / "index"

    shutil.rmtree(index)  # as a store written before the index existed
    assert render(walker(pipeline).walk(pipeline.raw), "json") == before  # rebuilt on the first downstream lookup
    assert (index / "complete.json").exists() and (index / "children" / pipeline.raw / pipeline.features).exists()

    shutil.rmtree(index)
    code, out, _ = cli(capsys, "reindex", "--store", pipeline.store)
    assert code == 0 and out.startswith("indexed ") and (index / "models" / NAME / "1" / pipeline.predictions).exists()
    assert render(walker(pipeline).walk(pipeline.raw), "json") == before


def test_new_snapshots_are_indexed_as_they_are_recorded_and_a_parent_from_elsewhere_shows_as_missing(pipeline, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.txt").write_text("y")
    store = SnapshotStore.open(str(tmp_path / "store"))
    parent = store.snapshot(tmp_path / "a")
    child = store.snapshot(tmp_path / "b", parents=[parent.snapshot_id],
                           extra={"model": {"name": "m", "version": "3", "run_id": "r"}})

    assert store.backend.exists(INDEX_MARKER_KEY)  # a new store starts complete: nothing to rebuild
    assert store.children(parent.snapshot_id) == [child.snapshot_id] and store.children(child.snapshot_id) == []
    assert store.outputs_of(model="m", version="3") == [child.snapshot_id]
    assert store.outputs_of(run_id="r") == []  # a registered model's outputs are indexed under its version

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "z.txt").write_text("z")
    orphan = store.snapshot(tmp_path / "c", parents=["f" * 64])  # its input was recorded in another store
    lineage = walker(pipeline, store).walk(orphan.snapshot_id)
    assert lineage.nodes[f"snapshot:{'f' * 64}"].data["missing"] is True
    assert render(lineage, "tree").splitlines()[0] == f"snapshot {'f' * 12}  (no record found)"
