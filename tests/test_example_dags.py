"""The example DAGs shipped in ``dags/``: their data generators and definitions (quick), and each one
run for real under the scheduler (api-server + scheduler + dag-processor on PostgreSQL, LocalExecutor)
on the embedded default stores, triggered through the REST API as the UI's trigger form does.

One Airflow serves the module (``DAG_FILES``); scheduler tests run in file order and share its stores.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import subprocess
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.airflow_cluster import AirflowCluster, airflow_cluster  # noqa: F401 - the fixture
from tests.conftest import REPO, VENV_BIN

DAG_FILES = [REPO / "dags" / name for name in ("wine_quality_retrain.py", "fraud_detection.py", "reproduce_run.py")]

WINE_DAG = "wine_quality_retrain"
WINE_TASKS = ["check_conf", "generate_wines", "snapshot_wines", "tune_elasticnet", "train_elasticnet", "register_wine_quality",
              "score_wines"]


def load_dag_module(name: str):
    """The DAG file executed as a fresh module (its ``dag`` and constants), as the dag-processor parses it."""
    spec = importlib.util.spec_from_file_location(f"example_dag_{name}", REPO / "dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolved_params(dag, conf: dict) -> dict:
    """The params a run triggered with ``conf`` gets, validated as Airflow validates a trigger."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


# ----------------------------------------------------------------------------- wine: quick


def test_wine_generator_is_deterministic_per_seed_with_uci_columns_ranges_and_a_plausible_quality():
    from airflow_mlops.datasets.wine import COLUMNS, FEATURE_COLUMNS, KEY, RANGES, generate_wine_quality

    frame = generate_wine_quality(4000, seed=11)
    assert list(frame.columns) == COLUMNS
    assert all(name.isidentifier() and name == name.lower() for name in COLUMNS)  # snake_case, signature-safe
    assert frame[KEY].tolist() == list(range(4000))
    assert frame.equals(generate_wine_quality(4000, seed=11))
    assert not frame[FEATURE_COLUMNS].equals(generate_wine_quality(4000, seed=12)[FEATURE_COLUMNS])
    assert not frame.isna().any().any()
    for column, (low, high) in RANGES.items():
        assert frame[column].dtype.kind == "f" and low <= frame[column].min() and frame[column].max() <= high, column
    # means near the UCI red wine table's
    assert 7.8 < frame["fixed_acidity"].mean() < 8.8 and 10.0 < frame["alcohol"].mean() < 10.8
    assert 3.25 < frame["ph"].mean() < 3.37 and 0.9955 < frame["density"].mean() < 0.998
    assert frame["quality"].dtype.kind == "i" and set(frame["quality"]) <= set(range(3, 9))
    shares = frame["quality"].value_counts(normalize=True)
    assert shares[5] + shares[6] > 0.7 and shares.get(3, 0) < 0.02 and shares.get(8, 0) < 0.03
    corr = frame.corr()["quality"]
    assert corr["alcohol"] > 0.3 and corr["volatile_acidity"] < -0.2 and corr["sulphates"] > 0.05
    assert frame[["fixed_acidity", "ph"]].corr().iloc[0, 1] < -0.4  # more acid, lower pH

    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_score

    rmse = -cross_val_score(LinearRegression(), frame[FEATURE_COLUMNS], frame["quality"],
                            scoring="neg_root_mean_squared_error", cv=5).mean()
    assert rmse < 0.9 * frame["quality"].std()  # the measurements explain part of quality, noise the rest


def test_wine_dag_generates_each_dates_own_data_atomically_and_the_same_for_a_date(tmp_path):
    import pandas as pd

    dag = load_dag_module(WINE_DAG).dag
    generate = dag.get_task("generate_wines").python_callable
    params = resolved_params(dag, {"rows": 300, "seed": 5})
    first = Path(generate(str(tmp_path / "a"), "2026-03-01", params=params))
    again = Path(generate(str(tmp_path / "b"), "2026-03-01", params=params))
    other = Path(generate(str(tmp_path / "c"), "2026-03-02", params=params))
    assert first.name == "wine_quality.csv" and sorted(p.name for p in first.parent.iterdir()) == ["wine_quality.csv"]
    assert first.read_bytes() == again.read_bytes() != other.read_bytes()
    assert len(pd.read_csv(first)) == 300


def test_wine_dag_definition_schedule_retries_params_and_docs():
    from airflow_mlops.operators import OptunaTuneOperator
    from airflow_mlops.tracking.metrics import REGRESSOR_METRICS

    module = load_dag_module(WINE_DAG)
    dag = module.dag
    assert dag.dag_id == WINE_DAG and not dag.catchup and dag.max_active_runs == 1
    assert dag.doc_md == module.__doc__ and "ElasticNet" in dag.doc_md
    assert {"airflow-mlops", "example"} <= set(dag.tags)
    tune = dag.get_task("tune_elasticnet")
    assert tune.grace_period >= inspect.signature(OptunaTuneOperator.__init__).parameters["grace_period"].default
    assert dag.default_args["retries"] >= 1 and dag.default_args["retry_delay"] > timedelta(seconds=tune.grace_period)
    assert tune.retry_delay == dag.default_args["retry_delay"]
    chain = [dag.get_task(task_id) for task_id in WINE_TASKS]
    for upstream, downstream in zip(chain, chain[1:]):
        assert upstream.task_id in downstream.upstream_task_ids, (upstream.task_id, downstream.task_id)
    assert "snapshot_wines" in dag.get_task("score_wines").upstream_task_ids  # scores the day's snapshot
    train = dag.get_task("train_elasticnet")
    assert tune.estimator == train.estimator == "sklearn.linear_model.ElasticNet"
    assert tune.features == train.features and "wine_id" not in tune.features and tune.target == "quality"
    assert dag.params.get_param("gate_metric").schema["enum"] == list(REGRESSOR_METRICS)
    assert resolved_params(dag, {})["gate_metric"] == "root_mean_squared_error"


@pytest.mark.parametrize("conf", [
    {"n_trials": 0}, {"n_trials": 2.5}, {"alpha_low": "abc"}, {"alpha_low": 0}, {"alpha_high": -1.0},
    {"l1_ratio_high": 1.5}, {"rows": "100"}, {"rows": 10}, {"gate_metric": "roc_auc"}, {"min_improvement": -0.1},
    {"seed": -1},
])
def test_wine_dag_params_refuse_bad_values(conf):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        resolved_params(load_dag_module(WINE_DAG).dag, conf)


def test_wine_search_space_is_rendered_from_params_and_checked_by_the_tuner():
    from airflow_mlops.tuning.request import checked_space

    tune = load_dag_module(WINE_DAG).dag.get_task("tune_elasticnet")
    assert "search_space" in tune.template_fields
    conf = {"alpha_low": 0.002, "alpha_high": 0.3, "l1_ratio_low": 0.1, "l1_ratio_high": 0.9}
    rendered = tune.render_template(tune.search_space, {"params": resolved_params(tune.dag, conf)})
    space = {d.name: d for d in checked_space(rendered, None, tune.estimator, tune.seed)}
    assert sorted(space) == ["alpha", "l1_ratio"]
    assert (space["alpha"].kind, space["alpha"].low, space["alpha"].high, space["alpha"].log) == ("float", 0.002, 0.3, True)
    assert (space["l1_ratio"].low, space["l1_ratio"].high, space["l1_ratio"].log) == (0.1, 0.9, False)


def test_an_inverted_alpha_range_fails_the_tuning_task_before_any_data_study_or_run(airflow_home):
    """Low above high passes the param schema; the tuner's search-space check refuses it, for good (no retry)."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from airflow_mlops.operators._input import InputFailure
    from airflow_mlops.tuning.space import SearchSpaceError

    tune = load_dag_module(WINE_DAG).dag.get_task("tune_elasticnet")
    params = resolved_params(tune.dag, {"alpha_low": 1.0, "alpha_high": 0.01})
    tune.search_space = tune.render_template(tune.search_space, {"params": params})
    tune.n_trials = "3"
    tune.input_snapshot = "no-such-snapshot"  # never reached: the space is checked first
    ti = SimpleNamespace(dag_id=WINE_DAG, run_id="manual__inverted", task_id=tune.task_id, map_index=-1, try_number=1)
    with pytest.raises(InputFailure, match=r"alpha: low 1\.0 is above high 0\.01") as refused:
        tune.execute({"ti": ti, "logical_date": None})
    assert isinstance(refused.value, AirflowFailException) and isinstance(refused.value.__context__, SearchSpaceError)
    assert not (airflow_home / "airflow_mlops" / "optuna.db").exists()
    assert not (airflow_home / "airflow_mlops" / "mlflow.db").exists()


# ----------------------------------------------------------------------------- under the scheduler


@pytest.fixture(scope="module")
def cluster(airflow_cluster: AirflowCluster) -> AirflowCluster:  # noqa: F811
    """Airflow with the DAGs parsed, and the wine DAG's first scheduled run finished.

    The DAGs are unpaused at creation, so the scheduler starts the run of the latest schedule tick at
    once (with default params); manual runs queue behind it (``max_active_runs=1``).
    """
    airflow_cluster.wait_for_dags(WINE_DAG)
    deadline = time.monotonic() + 120
    while not (scheduled := [r for r in airflow_cluster.dag_runs(WINE_DAG) if r["run_type"] == "scheduled"]):
        assert time.monotonic() < deadline, "the scheduler made no run of the unpaused DAG"
        time.sleep(1)
    first = min(scheduled, key=lambda r: r["logical_date"])
    airflow_cluster.wait_for_runs(WINE_DAG, [first["dag_run_id"]], timeout=600)
    return airflow_cluster


def _runs_of(client, experiment: str, run_id: str, task_id: str) -> list:
    """Every MLflow run (top level and nested) a task instance made."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], max_results=1000, filter_string=(
        f"tags.`airflow.run_id` = '{run_id}' and tags.`airflow.task_id` = '{task_id}'"))


def _study(client, run_id: str) -> tuple:
    """(parent run, trial runs) of the run's tuning task."""
    runs = _runs_of(client, "wine_quality", run_id, "tune_elasticnet")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) + 1 == len(runs)
    return parent, trials


def _records_of_run(cluster: AirflowCluster, run_id: str) -> dict:
    return {r.airflow["task_id"]: r for r in cluster.snapshot_store().records() if r.airflow.get("run_id") == run_id}


def _version_of_training(client, training_run_id: str):
    (version,) = [v for v in client.search_model_versions("name = 'wine_quality'") if v.run_id == training_run_id]
    return version


def _assert_gated_against(client, version, champion_before) -> str:
    """The gate decided on ``version`` against ``champion_before``, both scores tagged; the aliases follow."""
    from airflow_mlops.tracking.tags import CHALLENGER_SCORE_TAG, CHAMPION_SCORE_TAG, CHAMPION_VERSION_TAG, DECISION_TAG

    tags = version.tags
    decision = tags[DECISION_TAG]
    assert decision in ("champion", "challenger"), tags
    assert tags[CHAMPION_VERSION_TAG] == str(champion_before.version)
    challenger_score, champion_score = float(tags[CHALLENGER_SCORE_TAG]), float(tags[CHAMPION_SCORE_TAG])
    assert challenger_score > 0 and champion_score > 0  # RMSE of both on the same held-out rows
    champion = client.get_model_version_by_alias("wine_quality", "champion")
    if decision == "champion":
        assert challenger_score < champion_score  # lower RMSE wins
        assert str(champion.version) == str(version.version)
        previous = client.get_model_version_by_alias("wine_quality", "previous-champion")
        assert str(previous.version) == str(champion_before.version)
    else:
        assert challenger_score >= champion_score
        assert str(champion.version) == str(champion_before.version)
        assert str(client.get_model_version_by_alias("wine_quality", "challenger").version) == str(version.version)
    return decision


def _trigger_as_ui(cluster: AirflowCluster, dag_id: str, conf: dict, logical_date: str) -> tuple[int, dict]:
    """POST a run as the UI's trigger form does (same endpoint; the Referer makes Airflow record a UI trigger)."""
    request = urllib.request.Request(
        f"{cluster.url}/api/v2/dags/{dag_id}/dagRuns", method="POST",
        headers={"Content-Type": "application/json", "Referer": f"{cluster.url}/dags/{dag_id}"},
        data=json.dumps({"logical_date": logical_date, "conf": conf}).encode(),
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _lineage(cluster: AirflowCluster, ref: str) -> dict:
    shown = subprocess.run([str(VENV_BIN / "airflow-mlops"), "lineage", ref, "--format", "json"],
                           capture_output=True, text=True, env=cluster.env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    return {node["id"]: node for node in json.loads(shown.stdout)["nodes"]}


@pytest.mark.scheduler
@pytest.mark.postgres
def test_wine_dag_parses_under_the_dag_processor_with_its_form(cluster):
    status, errors = cluster.api("GET", "/api/v2/importErrors")
    assert status == 200 and errors["total_entries"] == 0, errors
    status, details = cluster.api("GET", f"/api/v2/dags/{WINE_DAG}/details")
    assert status == 200, details
    assert details["doc_md"].startswith("Wine quality, daily") and details["max_active_runs"] == 1
    assert details["catchup"] is False
    form = details["params"]  # what the UI's trigger form is built from
    assert set(form) == {"rows", "seed", "n_trials", "alpha_low", "alpha_high", "l1_ratio_low", "l1_ratio_high",
                         "gate_metric", "min_improvement"}
    assert form["n_trials"]["schema"]["minimum"] == 1 and form["alpha_low"]["schema"]["type"] == "number"
    assert "root_mean_squared_error" in form["gate_metric"]["schema"]["enum"]
    assert all(form[name]["description"] for name in form)


@pytest.mark.scheduler
@pytest.mark.postgres
def test_wine_dag_unpaused_runs_once_for_the_latest_day_with_default_params_into_the_first_champion(cluster):
    """catchup=False: one scheduled run (the latest tick), not one per day since start_date."""
    from datetime import datetime, timezone

    runs = sorted((r for r in cluster.dag_runs(WINE_DAG) if r["run_type"] == "scheduled"), key=lambda r: r["logical_date"])
    assert 1 <= len(runs) <= 2, [r["logical_date"] for r in runs]  # a second one only if midnight passed meanwhile
    now = datetime.now(timezone.utc)
    assert all(now - datetime.fromisoformat(r["logical_date"]) < timedelta(days=2) for r in runs)
    scheduled = runs[0]
    run_id = scheduled["dag_run_id"]
    assert scheduled["state"] == "success"
    raw = _records_of_run(cluster, run_id)["snapshot_wines"]
    assert (Path(raw.source) / "wine_quality.csv").read_text().count("\n") == 1_599 + 1  # default rows
    client = cluster.mlflow_client()
    study, trials = _study(client, run_id)
    assert study.data.params["n_trials"] == "20" and len(trials) == 20  # default n_trials
    (train,) = _runs_of(client, "wine_quality", run_id, "train_elasticnet")
    version = client.get_model_version_by_alias("wine_quality", "champion")
    assert str(version.version) == "1" and version.run_id == train.info.run_id
    assert version.tags["airflow_mlops.gate.decision"] == "champion"


@pytest.mark.scheduler
@pytest.mark.postgres
def test_wine_dag_end_to_end_two_days_two_versions_through_the_gate(cluster):
    conf = {"rows": 400, "n_trials": 3, "alpha_low": 0.001, "alpha_high": 0.5}
    client = cluster.mlflow_client()
    champion_before = client.get_model_version_by_alias("wine_quality", "champion")
    run_id = cluster.trigger(WINE_DAG, conf=conf, logical_date="2026-03-01T00:00:00Z")
    cluster.wait_for_runs(WINE_DAG, [run_id], timeout=600)
    instances = {ti["task_id"]: ti for ti in cluster.task_instances(WINE_DAG, run_id)}
    assert {task: (ti["state"], ti["try_number"]) for task, ti in instances.items()} == {
        task: ("success", 1) for task in WINE_TASKS}

    # the data version: the day's generated wines, snapshotted
    records = _records_of_run(cluster, run_id)
    assert set(records) == {"snapshot_wines", "score_wines"}
    raw, scored = records["snapshot_wines"], records["score_wines"]
    assert raw.source == str(cluster.home / "airflow_mlops" / "data" / "wine_quality" / "2026-03-01")
    assert raw.airflow["logical_date"].startswith("2026-03-01") and raw.files == 1
    assert (Path(raw.source) / "wine_quality.csv").read_text().count("\n") == conf["rows"] + 1

    # the study: a parent run with n_trials nested trials, sampled inside the conf's ranges
    study, trials = _study(client, run_id)
    assert study.info.status == "FINISHED" and study.data.params["n_trials"] == "3"
    assert study.data.params["metric"] == "root_mean_squared_error"
    assert len(trials) == 3 and {t.info.status for t in trials} == {"FINISHED"}
    for trial in trials:
        assert 0.001 <= float(trial.data.params["alpha"]) <= 0.5
        assert 0.0 <= float(trial.data.params["l1_ratio"]) <= 1.0
    assert study.data.tags["airflow_mlops.snapshot_id"] == raw.snapshot_id

    # one finished training run with the study's best params, tagged with the snapshot
    (train,) = _runs_of(client, "wine_quality", run_id, "train_elasticnet")
    assert train.info.status == "FINISHED"
    best = {k.removeprefix("best."): v for k, v in study.data.params.items() if k.startswith("best.")}
    assert sorted(best) == ["alpha", "l1_ratio"]
    assert {key: train.data.params[key] for key in best} == best
    assert train.data.tags["airflow_mlops.snapshot_id"] == raw.snapshot_id
    assert 0 < train.data.metrics["root_mean_squared_error"] < 1.5
    # the run's description (MLflow's note, markdown) links back to its task instance in the Airflow UI
    train_page = f"{cluster.url}/dags/{WINE_DAG}/runs/{quote(run_id)}/tasks/train_elasticnet?try_number=1"
    assert train.data.tags["airflow_mlops.task_instance_url"] == train_page
    assert train.data.tags["mlflow.note.content"] == (
        f"Made by Airflow task instance [{WINE_DAG} / {run_id} / train_elasticnet, try 1]({train_page}).")
    assert study.data.metrics["best_root_mean_squared_error"] == min(t.data.metrics["root_mean_squared_error"]
                                                                     for t in trials)

    # registered as the next version, decided on by the gate against the champion it found
    version = _version_of_training(client, train.info.run_id)
    assert int(version.version) == int(champion_before.version) + 1
    register_page = f"{cluster.url}/dags/{WINE_DAG}/runs/{quote(run_id)}/tasks/register_wine_quality?try_number=1"
    assert version.description.endswith(f"/ register_wine_quality, try 1]({register_page}).") and \
        version.description.startswith(f"Model of MLflow run {train.info.run_id}, trained on snapshot {raw.snapshot_id}.")
    _assert_gated_against(client, version, champion_before)
    champion = client.get_model_version_by_alias("wine_quality", "champion")
    champion_version = str(champion.version)

    # predictions: a snapshot derived from the raw one that names the champion's version, one row per wine
    assert scored.parents == [raw.snapshot_id]
    assert scored.extra["model"] == {"model_uri": f"models:/wine_quality/{champion_version}", "name": "wine_quality",
                                     "version": champion_version, "run_id": champion.run_id, "alias": "champion"}
    restored = cluster.root / "restored-predictions"
    cluster.snapshot_store().restore(scored.snapshot_id, restored)
    import pandas as pd

    predictions = pd.read_parquet(restored)
    assert sorted(predictions.columns) == ["predicted_quality", "wine_id"]
    assert predictions["wine_id"].tolist() == list(range(conf["rows"]))
    assert predictions["predicted_quality"].between(2, 9).all()

    # lineage: this version back to the day's data and its training run; the champion to its own; the
    # day's data forward to the predictions
    upstream = _lineage(cluster, f"models:/wine_quality/{version.version}")
    assert {f"snapshot:{raw.snapshot_id}", f"run:{train.info.run_id}",
            f"model_version:wine_quality/{version.version}"} <= set(upstream)
    champion_snapshot = client.get_run(champion.run_id).data.tags["airflow_mlops.snapshot_id"]
    upstream = _lineage(cluster, "models:/wine_quality@champion")
    assert {f"snapshot:{champion_snapshot}", f"run:{champion.run_id}",
            f"model_version:wine_quality/{champion_version}"} <= set(upstream)
    assert f"snapshot:{scored.snapshot_id}" in _lineage(cluster, raw.snapshot_id[:12])

    # the next day: new data, another version the gate decides on against the champion then
    second = cluster.trigger(WINE_DAG, conf=conf, logical_date="2026-03-02T00:00:00Z")
    cluster.wait_for_runs(WINE_DAG, [second], timeout=400)
    raw_2 = _records_of_run(cluster, second)["snapshot_wines"]
    assert raw_2.snapshot_id != raw.snapshot_id
    (train_2,) = _runs_of(client, "wine_quality", second, "train_elasticnet")
    version_2 = _version_of_training(client, train_2.info.run_id)
    assert int(version_2.version) == int(version.version) + 1
    _assert_gated_against(client, version_2, champion)
    scored_2 = _records_of_run(cluster, second)["score_wines"]
    champion_2 = client.get_model_version_by_alias("wine_quality", "champion")
    assert scored_2.parents == [raw_2.snapshot_id] and scored_2.extra["model"]["version"] == str(champion_2.version)


@pytest.mark.scheduler
@pytest.mark.postgres
def test_wine_dag_ui_trigger_form_values_reach_the_tasks_and_bad_ones_are_refused_before_a_run(cluster):
    before = {run["dag_run_id"] for run in cluster.dag_runs(WINE_DAG)}
    for bad in ({"n_trials": 0}, {"alpha_low": "abc"}, {"gate_metric": "roc_auc"}, {"l1_ratio_high": 2}):
        status, body = _trigger_as_ui(cluster, WINE_DAG, {"rows": 200, **bad}, "2026-03-09T00:00:00Z")
        assert status == 400, (bad, status, body)
        assert "Invalid input for param" in body["detail"] and next(iter(bad)) in body["detail"], body
    assert {run["dag_run_id"] for run in cluster.dag_runs(WINE_DAG)} == before  # no run was created

    conf = {"rows": 250, "seed": 3, "n_trials": 2, "alpha_low": 0.01, "alpha_high": 0.2, "l1_ratio_low": 0.2,
            "l1_ratio_high": 0.4, "gate_metric": "mean_absolute_error", "min_improvement": 0.05}
    status, body = _trigger_as_ui(cluster, WINE_DAG, conf, "2026-03-05T00:00:00Z")
    assert status == 200, body
    assert body["triggered_by"] == "ui" and body["conf"] == conf
    run_id = body["dag_run_id"]
    cluster.wait_for_runs(WINE_DAG, [run_id], timeout=400)

    raw = _records_of_run(cluster, run_id)["snapshot_wines"]
    assert (Path(raw.source) / "wine_quality.csv").read_text().count("\n") == 251
    client = cluster.mlflow_client()
    study, trials = _study(client, run_id)
    assert study.data.params["n_trials"] == "2" and study.data.params["metric"] == "mean_absolute_error"
    assert study.data.params["direction"] == "minimize"
    space = {d["name"]: d for d in json.loads(study.data.params["search_space"])}
    assert (space["alpha"]["low"], space["alpha"]["high"], space["alpha"]["log"]) == (0.01, 0.2, True)
    assert (space["l1_ratio"]["low"], space["l1_ratio"]["high"]) == (0.2, 0.4)
    assert len(trials) == 2
    for trial in trials:
        assert 0.01 <= float(trial.data.params["alpha"]) <= 0.2
        assert 0.2 <= float(trial.data.params["l1_ratio"]) <= 0.4
    (train,) = _runs_of(client, "wine_quality", run_id, "train_elasticnet")
    version = _version_of_training(client, train.info.run_id)
    rule = json.loads(version.tags["airflow_mlops.gate.rule"])
    assert rule["metric"] == "mean_absolute_error" and rule["min_improvement"] == 0.05, rule


@pytest.mark.scheduler
@pytest.mark.postgres
def test_wine_dag_inverted_alpha_range_fails_tuning_once_before_any_trial(cluster):
    """An input that cannot work fails its task on try 1 with one message, no retry, no study or run."""
    import optuna

    run_id = cluster.trigger(WINE_DAG, conf={"rows": 200, "n_trials": 2, "alpha_low": 0.5, "alpha_high": 0.05},
                             logical_date="2026-03-06T00:00:00Z")
    cluster.wait_for_runs(WINE_DAG, [run_id], timeout=300, expect="failed")
    tune = {ti["task_id"]: ti for ti in cluster.task_instances(WINE_DAG, run_id)}["tune_elasticnet"]
    assert (tune["state"], tune["try_number"]) == ("failed", 1)
    log = cluster.task_log(WINE_DAG, run_id, "tune_elasticnet", 1)
    assert '"exc_type":"InputFailure"' in log and "alpha: low 0.5 is above high 0.05" in log, log[-3000:]
    assert not _runs_of(cluster.mlflow_client(), "wine_quality", run_id, "tune_elasticnet")  # no parent run
    storage = f"sqlite:///{cluster.home / 'airflow_mlops' / 'optuna.db'}"
    assert not [s for s in optuna.get_all_study_summaries(storage) if run_id in s.study_name]  # no study, no trial


@pytest.mark.scheduler
@pytest.mark.postgres
def test_wine_dag_conf_with_an_unknown_key_fails_before_any_work_naming_it(cluster):
    run_id = cluster.trigger(WINE_DAG, conf={"rowz": 300}, logical_date="2026-03-07T00:00:00Z")
    cluster.wait_for_runs(WINE_DAG, [run_id], timeout=300, expect="failed")
    states = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in cluster.task_instances(WINE_DAG, run_id)}
    assert states["check_conf"] == ("failed", 1)
    assert {state for task, (state, _try) in states.items() if task != "check_conf"} == {"upstream_failed"}, states
    log = cluster.task_log(WINE_DAG, run_id, "check_conf", 1)
    assert f"conf key 'rowz' is not a param of {WINE_DAG}; its params: alpha_high, alpha_low," in log, log[-3000:]


@pytest.mark.scheduler
@pytest.mark.postgres
def test_fraud_dag_scheduled_run_on_the_embedded_default_then_reproduce_run_recreates_its_training(cluster):
    """The flagship's first scheduled run (default params, Spark local[*], embedded stores) makes the whole
    chain; reproduce_run, triggered with that training run's id, re-creates it with the same metrics."""
    cluster.wait_for_dags("fraud_detection", "reproduce_run")
    deadline = time.monotonic() + 120
    while not (scheduled := [r for r in cluster.dag_runs("fraud_detection") if r["run_type"] == "scheduled"]):
        assert time.monotonic() < deadline, "the scheduler made no fraud_detection run"
        time.sleep(1)
    run_id = min(scheduled, key=lambda r: r["logical_date"])["dag_run_id"]
    cluster.wait_for_runs("fraud_detection", [run_id], timeout=900)
    run_logs = cluster.home / "logs" / "dag_id=fraud_detection" / f"run_id={run_id}"
    loggers = set()
    for task_id in ("tune_fraud_model", "train_fraud_model", "register_fraud_model"):
        logs = sorted((run_logs / f"task_id={task_id}").rglob("attempt=*.log"))  # mapped tasks: map_index=N/
        assert logs, f"no log of {task_id}"
        for log in logs:  # our lines, not a page of third-party warnings per task
            lines = log.read_text(errors="replace").splitlines()
            assert not [line for line in lines if "DeprecatedImportWarning" in line], log
            assert len(lines) < 150, f"{log}: {len(lines)} lines"
            records = [json.loads(line) for line in lines if line.startswith("{")]
            errors = [r["event"] for r in records if r.get("level") == "error"]
            assert errors == [], f"{log}: a successful task logged errors: {errors}"
            loggers |= {(str(r.get("logger") or "").split(".")[0], r.get("level")) for r in records}
    assert {("mlflow", "info"), ("optuna", "info")} <= loggers  # their lines, at their own level

    records = _records_of_run(cluster, run_id)
    raw, features, scored = records["snapshot_raw"], records["customer_features"], records["score_customers"]
    assert features.parents == [raw.snapshot_id] and features.extra["spark"]["master"] == "local[*]"
    assert scored.parents == [features.snapshot_id] and scored.extra["prediction"]["engine"] == "spark"
    client = cluster.mlflow_client()
    (training,) = [r for r in _runs_of(client, "fraud_detection", run_id, "train_fraud_model") if r.info.status == "FINISHED"]
    (version,) = [v for v in client.search_model_versions("name = 'fraud_detection'") if v.run_id == training.info.run_id]
    assert scored.extra["model"]["version"] == str(version.version)
    assert {"snapshot:" + raw.snapshot_id, "run:" + training.info.run_id} <= set(_lineage(cluster, f"models:/fraud_detection/{version.version}"))

    status, _ = _trigger_as_ui(cluster, "reproduce_run", {"run_id": "not a run id"}, None)
    assert status == 400  # the form's pattern refuses it before a run exists
    again = cluster.trigger("reproduce_run", conf={"run_id": training.info.run_id})
    cluster.wait_for_runs("reproduce_run", [again], timeout=600)
    experiment_id = client.get_experiment_by_name("fraud_detection").experiment_id
    (reproduced,) = client.search_runs([experiment_id], f"tags.`airflow_mlops.reproduces` = '{training.info.run_id}'")
    assert reproduced.data.metrics == training.data.metrics
