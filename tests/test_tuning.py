"""OptunaTuneOperator: search-space checks, nested MLflow runs, resumption after SIGKILL, parallel trials."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from airflow_mlops.errors import MlopsError
from tests.task_process import attempt_config, run_attempt, run_in_process, runs_of

STUDY_DB_PASSWORD = "study-db-s3cret"
SPACE = {
    "n_estimators": {"type": "int", "low": 5, "high": 30},
    "max_depth": {"type": "int", "low": 2, "high": 6},
    "criterion": {"type": "categorical", "choices": ["gini", "entropy"]},
}


def tune_config(tmp_path, snapshot_uri, try_number, **operator):
    config = attempt_config(tmp_path, snapshot_uri, try_number, **operator)
    config["operator_class"] = "OptunaTuneOperator"
    config["task_id"] = "tune"
    return config


@pytest.fixture
def optuna_postgres(postgres_databases, monkeypatch) -> str:
    """An Airflow postgres connection to a fresh study database; returns the conn id."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_databases("optuna"))
    conn = {"conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username,
            "password": STUDY_DB_PASSWORD, "schema": url.database}  # trust auth accepts it; it must not leak
    monkeypatch.setenv("AIRFLOW_CONN_OPTUNA_TEST", json.dumps(conn))
    return "optuna_test"


def trials_of(study_name: str, conn_id: str | None = None):
    import optuna

    from airflow_mlops.hooks.optuna import OptunaStorageHook

    storage = OptunaStorageHook(conn_id).get_storage() if conn_id else OptunaStorageHook().get_storage()
    return optuna.load_study(study_name=study_name, storage=storage).get_trials()


def test_an_invalid_search_space_is_rejected_before_any_trial(tmp_path, snapshot, embedded_client):
    import optuna

    from airflow_mlops.hooks.optuna import OptunaStorageHook

    _, record = snapshot
    space = {
        "max_depth": {"type": "int", "low": 12, "high": 2},
        "min_samples_leaf": {"type": "float", "low": 0, "high": 1, "log": True},
        "criterion": {"type": "categorical", "choices": []},
        "max_dept": {"type": "int", "low": 1, "high": 3},
        "max_features": {"type": "normal", "mean": 0},
    }
    config = tune_config(tmp_path, record.uri, 1, estimator="sklearn.ensemble.RandomForestClassifier",
                         search_space=space, n_trials=5)
    with pytest.raises(MlopsError) as raised:
        run_attempt(config)
    message = str(raised.value)
    assert message.startswith("invalid search space: ") and "\n" not in message
    for problem in ("max_depth: low 12 is above high 2", "min_samples_leaf: log scale needs low > 0",
                    "criterion: categorical needs a non-empty 'choices' list",
                    "max_dept: not a parameter of the estimator", "max_features: type must be float, int or categorical"):
        assert problem in message
    assert optuna.get_all_study_summaries(OptunaStorageHook().get_storage()) == []
    assert runs_of(embedded_client, tmp_path.name) == []

    bad_metric = tune_config(tmp_path, record.uri, 1, estimator="sklearn.ensemble.RandomForestClassifier",
                             search_space={"max_depth": {"type": "int", "low": 2, "high": 4}}, n_trials=5, metric="r2_score")
    with pytest.raises(MlopsError, match="metric 'r2_score' is not one of the classifier metrics"):
        run_attempt(bad_metric)
    no_direction = tune_config(tmp_path, record.uri, 1, objective="tests.train_functions:quadratic_objective",
                               metric="loss", n_trials=5)
    with pytest.raises(MlopsError, match="give direction .* for metric 'loss'"):
        run_attempt(no_direction)


def test_a_study_is_one_parent_run_with_a_nested_run_per_trial(tmp_path, snapshot, embedded_client):
    _, record = snapshot
    config = tune_config(tmp_path, record.uri, 1, estimator="sklearn.ensemble.RandomForestClassifier",
                         search_space=json.dumps(SPACE), n_trials=6, seed=3)
    outcome = run_attempt(config)
    result = outcome["result"]
    assert result["n_complete"] == 6 and result["study_name"].startswith("retrain.tune.scheduled__2026-01-01T00:00:00+00:00.")
    assert set(result["best_params"]) == set(SPACE)

    runs = runs_of(embedded_client, tmp_path.name)
    parent = next(r for r in runs if r.info.run_id == result["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 7 and len(children) == 6
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_roc_auc"] == result["best_value"]
    assert {k: parent.data.params[f"best.{k}"] for k in SPACE} == {k: str(v) for k, v in result["best_params"].items()}
    assert parent.data.tags["optuna.study_name"] == result["study_name"]
    assert parent.data.tags["optuna.storage"].startswith("sqlite:///")
    assert parent.data.tags["airflow_mlops.snapshot_id"] == record.snapshot_id
    assert parent.data.params["validation"] == "5-fold stratified cross-validation on the training part"
    plots = {a.path for a in embedded_client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/optimization_history.png", "plots/param_importances.png"}
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["optuna.state"] == "COMPLETE"
        assert set(child.data.params) == set(SPACE)
        assert {"roc_auc", "trial_duration_seconds"} <= set(child.data.metrics)
    assert max(c.data.metrics["roc_auc"] for c in children) == result["best_value"]
    assert outcome["xcom"]["_link_MlflowRunLink"].endswith(f"/runs/{parent.info.run_id}")

    # best_params go straight into the training operator, which alone scores the held-out test split.
    trained = run_attempt(attempt_config(tmp_path, record.uri, 1, estimator="sklearn.ensemble.RandomForestClassifier",
                                         hyperparams=result["best_params"], seed=3))["result"]
    assert 0.5 < trained["metrics"]["roc_auc"] <= 1.0


def test_no_trial_ever_sees_the_rows_the_final_training_run_is_scored_on(tmp_path, snapshot, embedded_client, markers):
    """Hyperparameters are chosen on validation folds of the training part, never on the test split."""
    from airflow_mlops.tracking.data import load_table, prepare
    from airflow_mlops.tracking.request import TrainingRequest

    store, record = snapshot
    estimator = "tests.train_functions.RecordingLogisticRegression"
    result = run_attempt(tune_config(tmp_path, record.uri, 1, estimator=estimator, n_trials=3,
                                     search_space={"C": {"type": "float", "low": 0.01, "high": 10, "log": True}}))["result"]
    seen = {int(i) for line in (markers / "rows").read_text().splitlines() for i in line.split()}
    folder = store.materialize(record.snapshot_id, tmp_path / "restored")
    split = prepare(TrainingRequest(data_path=folder, snapshot_id=record.snapshot_id, snapshot_uri=record.uri,
                                    target="label", estimator=estimator))  # the split training uses (same seed)
    assert seen == set(split.X_train.index)  # the trials used the training part, all of it, and nothing else
    assert not seen & set(split.X_test.index) and len(load_table(folder)) == len(split.X_train) + len(split.X_test)

    (markers / "rows").unlink()
    run_attempt(attempt_config(tmp_path, record.uri, 1, estimator=estimator, hyperparams=result["best_params"]))
    scored = {int(i) for line in (markers / "rows").read_text().splitlines()[1:] for i in line.split()}
    assert set(split.X_test.index) <= scored  # the training run evaluates on the test split


def test_failing_trials_are_recorded_and_replaced_until_every_trial_fails(tmp_path, snapshot, embedded_client, markers,
                                                                         monkeypatch):
    _, record = snapshot
    result = run_attempt(tune_config(tmp_path, record.uri, 1, objective="tests.train_functions:negative_x_fails",
                                     metric="x", direction="minimize", n_trials=5, sampler="random"))["result"]
    trials = trials_of(result["study_name"])
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 5 and states.count("FAIL") >= 1
    failed_runs = [r for r in runs_of(embedded_client, tmp_path.name) if r.data.tags.get("optuna.state") == "FAIL"]
    assert failed_runs and all("is out of the model's domain" in r.data.tags["airflow_mlops.error"] for r in failed_runs)
    assert all(r.info.status == "FAILED" for r in failed_runs)

    other = tmp_path / "all-fail"
    other.mkdir()
    config = tune_config(other, record.uri, 1, objective="tests.train_functions:fails_while_broken", metric="loss",
                         direction="minimize", n_trials=3)
    config["run_id"] = "scheduled__2026-01-02"  # another task instance, so another study
    monkeypatch.setenv("OBJECTIVE_BROKEN", "1")
    with pytest.raises(MlopsError, match="every trial of study .* failed; last error: RuntimeError: CUDA out of memory"):
        run_attempt(config)
    (parent,) = [r for r in runs_of(embedded_client, other.name) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED" and "every trial" in parent.data.tags["airflow_mlops.error"]

    # What broke it is mended and the task retried: try 2 resumes the study and its parent run, which
    # ends FINISHED without the first attempt's error.
    monkeypatch.delenv("OBJECTIVE_BROKEN")
    retry = {**config, "try_number": 2, "output": str(other / "attempt-2.json")}
    assert run_attempt(retry)["result"]["parent_run_id"] == parent.info.run_id
    resumed = embedded_client.get_run(parent.info.run_id)
    assert resumed.info.status == "FINISHED" and "airflow_mlops.error" not in resumed.data.tags


@pytest.mark.postgres
def test_a_study_killed_midway_resumes_on_retry_keeping_earlier_trials(
    tmp_path, snapshot, optuna_postgres, mlflow_conn, markers, monkeypatch
):
    from airflow_mlops.hooks.mlflow import MlflowHook

    import optuna

    from airflow_mlops.hooks.optuna import OptunaStorageHook

    _, record = snapshot
    monkeypatch.setenv("TRIAL_SLEEP", "2")  # each trial stays RUNNING that long before it writes its marker line
    options = dict(objective="tests.train_functions:quadratic_objective", metric="loss", direction="minimize", n_trials=10,
                   optuna_conn_id=optuna_postgres, mlflow_conn_id=mlflow_conn, heartbeat_interval=5, grace_period=60)
    storage = OptunaStorageHook(optuna_postgres).get_storage()  # ready before the race below
    first = run_in_process(tune_config(tmp_path, record.uri, 1, **options))
    deadline = time.monotonic() + 120
    while first.poll() is None and time.monotonic() < deadline:
        if (markers / "trials").exists() and len((markers / "trials").read_text().split()) >= 4:
            break
        time.sleep(0.05)
    assert first.poll() is None, (tmp_path / "attempt-1.log").read_text()[-3000:]
    (study_name,) = optuna.get_all_study_names(storage)
    running: list[int] = []
    while not running and first.poll() is None and time.monotonic() < deadline:  # the next trial has started
        running = [t.number for t in optuna.load_study(study_name=study_name, storage=storage).trials
                   if t.state.name == "RUNNING"]
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL, "the study finished before it could be killed"
    assert running, "no trial was running at the kill"

    before = {t.number: (t.params, t.value) for t in trials_of(study_name, optuna_postgres) if t.state.name == "COMPLETE"}
    assert 3 <= len(before) < 10
    # The retry comes at once, well within the grace period: the killed trial is failed all the same.
    monkeypatch.setenv("TRIAL_SLEEP", "0")
    result = run_attempt(tune_config(tmp_path, record.uri, 2, **options))["result"]

    trials = trials_of(study_name, optuna_postgres)
    complete = {t.number: (t.params, t.value) for t in trials if t.state.name == "COMPLETE"}
    assert len(complete) == 10 and result["n_complete"] == 10
    assert all(complete[number] == kept for number, kept in before.items())  # earlier trials kept
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]  # nothing left hanging
    assert result["best_value"] == min(value for _, value in complete.values())
    fresh = [t.params["x"] for t in trials if t.state.name == "COMPLETE" and "failed_trial" not in t.system_attrs]
    assert len(set(fresh)) == len(fresh)  # the retry suggested new points, not the first attempt's again

    with MlflowHook(mlflow_conn).tracking_session() as client:
        runs = runs_of(client, tmp_path.name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [(p.info.run_id, p.info.status) for p in parents] == [(result["parent_run_id"], "FINISHED")]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result["parent_run_id"]]
    assert sum(r.info.status == "FINISHED" for r in children) == 10
    assert all(r.info.status != "RUNNING" for r in children)
    # The trial running at the kill went stale: failed, re-queued with its params, and its run says why.
    stale = [t.number for t in trials if t.state.name == "FAIL"]
    assert [t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs] == stale
    stale_runs = [r for r in children if r.data.tags["optuna.state"] == "FAIL"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in stale_runs) == stale
    assert all(r.data.tags["airflow_mlops.error"].startswith("stale:") for r in stale_runs)


@pytest.mark.postgres
def test_parallel_trials_on_postgres(tmp_path, snapshot, optuna_postgres, embedded_client, markers, monkeypatch):
    _, record = snapshot
    monkeypatch.setenv("TRIAL_SLEEP", "0.3")
    result = run_attempt(tune_config(tmp_path, record.uri, 1, objective="tests.train_functions:quadratic_objective",
                                     metric="loss", direction="minimize", n_trials=8, n_jobs=2,
                                     optuna_conn_id=optuna_postgres))["result"]
    trials = trials_of(result["study_name"], optuna_postgres)
    assert [t.state.name for t in trials].count("COMPLETE") == 8 == result["n_complete"]
    overlapping = [(a.number, b.number) for a in trials for b in trials
                   if a.number < b.number and a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete]
    assert overlapping  # two trials ran at the same time
    children = [r for r in runs_of(embedded_client, tmp_path.name) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == list(range(8))
    parent = embedded_client.get_run(result["parent_run_id"])
    assert parent.data.tags["optuna.storage"].startswith("postgresql+psycopg2://postgres@127.0.0.1:5432/")
    recorded = json.dumps([parent.data.tags, parent.data.params] + [[c.data.tags, c.data.params] for c in children])
    assert STUDY_DB_PASSWORD not in recorded


def test_an_attempt_fails_the_trials_its_dead_attempts_left_running_at_once_and_no_others(airflow_home):
    """A retry sooner than the grace period must not leave its own dead trials RUNNING (Optuna's
    stale check waits for the grace period, and skips trials with no heartbeat at all), but must not
    touch a trial another worker is running in a shared study."""
    import optuna

    from airflow_mlops.hooks.optuna import OptunaStorageHook
    from airflow_mlops.tracking.tags import OWNER_ATTR
    from airflow_mlops.tuning.study import fail_trials_of_dead_attempts

    storage = OptunaStorageHook().get_storage(heartbeat_interval=30, grace_period=90)
    study = optuna.create_study(study_name="dead-attempt", storage=storage)
    study_id = storage.get_study_id_from_name("dead-attempt")
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    orphan = study.ask(x)  # killed before it was even marked: no owner, no heartbeat
    mine = study.ask(x)  # killed a second ago: its heartbeat is fresh
    mine.set_user_attr(OWNER_ATTR, "retrain.run-1.tune.-1")
    theirs = study.ask(x)  # another task instance's worker, alive
    theirs.set_user_attr(OWNER_ATTR, "retrain.run-1.tune.3")
    for trial in (mine, theirs):
        storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))

    fail_trials_of_dead_attempts(study, storage, "retrain.run-1.tune.-1")

    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[orphan.number] == "FAIL" and states[mine.number] == "FAIL" and states[theirs.number] == "RUNNING"
    requeued = {t.system_attrs["failed_trial"]: t for t in study.get_trials() if "failed_trial" in t.system_attrs}
    assert sorted(requeued) == [orphan.number, mine.number]
    assert all(t.state.name == "WAITING" and t.params == study.trials[n].params for n, t in requeued.items())


def test_a_pruner_stops_poor_trials_which_do_not_count_toward_n_trials(tmp_path, snapshot, embedded_client):
    _, record = snapshot
    result = run_attempt(tune_config(tmp_path, record.uri, 1, objective="tests.train_functions:reporting_objective",
                                     metric="loss", direction="minimize", n_trials=12, sampler="random", pruner="median"))["result"]
    states = [t.state.name for t in trials_of(result["study_name"])]
    assert "PRUNED" in states and states.count("COMPLETE") == 12 == result["n_complete"]
    children = [r for r in runs_of(embedded_client, tmp_path.name) if "mlflow.parentRunId" in r.data.tags]
    pruned = [r for r in children if r.data.tags["optuna.state"] == "PRUNED"]
    assert len(pruned) == states.count("PRUNED") and all(r.info.status == "KILLED" for r in pruned)


def test_the_built_in_objective_reports_each_fold_so_a_pruner_prunes(tmp_path, snapshot, embedded_client):
    import optuna

    _, record = snapshot
    # C=1e-6 predicts one class: accuracy near 0.5 on the first fold, far below the threshold
    space = {"C": {"type": "categorical", "choices": [1e-6, 1.0]}}
    result = run_attempt(tune_config(tmp_path, record.uri, 1, estimator="sklearn.linear_model.LogisticRegression",
                                     search_space=space, metric="accuracy_score", n_trials=4, sampler="random",
                                     pruner=optuna.pruners.ThresholdPruner(lower=0.7)))["result"]
    trials = trials_of(result["study_name"])
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and all(t.params["C"] == 1e-6 and list(t.intermediate_values) == [0] for t in pruned)
    assert len(complete) == 4 and all(t.params["C"] == 1.0 and len(t.intermediate_values) == 5 for t in complete)
    children = [r for r in runs_of(embedded_client, tmp_path.name) if r.data.tags.get("optuna.state") == "PRUNED"]
    assert len(children) == len(pruned) and all(r.info.status == "KILLED" for r in children)


def test_a_study_cleared_after_new_data_is_a_new_study_and_supersedes_the_old_one(tmp_path, snapshot, embedded_client):
    import pandas as pd

    from airflow_mlops.snapshots import SnapshotStore

    store, record = snapshot
    table = pd.read_csv(store.materialize(record.snapshot_id, tmp_path / "restored") / "train.csv")
    (tmp_path / "newer").mkdir()
    table.iloc[:300].to_csv(tmp_path / "newer" / "train.csv", index=False)
    newer = SnapshotStore.open(store.uri).snapshot(tmp_path / "newer").uri
    options = dict(estimator="sklearn.linear_model.LogisticRegression", n_trials=2,
                   search_space={"C": {"type": "float", "low": 0.01, "high": 10, "log": True}})
    first = run_attempt(tune_config(tmp_path, record.uri, 1, **options))["result"]
    cleared = run_attempt(tune_config(tmp_path, newer, 2, **options))["result"]
    assert cleared["study_name"] != first["study_name"] and cleared["parent_run_id"] != first["parent_run_id"]
    assert len(trials_of(cleared["study_name"])) == 2  # not the old study's trials on the old data
    old = embedded_client.get_run(first["parent_run_id"])
    assert old.data.tags["airflow_mlops.superseded_by"] == cleared["parent_run_id"]


def _classification(labels):
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    features, classes = make_classification(n_samples=300, n_features=5, flip_y=0.2, random_state=0)
    return LogisticRegression(), features, np.array(labels)[classes], "classifier"


def _regression():
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge

    features, target = make_regression(n_samples=300, n_features=5, noise=10.0, random_state=0)
    return Ridge(), features, target + 500, "regressor"


@pytest.mark.parametrize("problem", [
    pytest.param(lambda: _classification((1, 2)), id="classifier-one-two"),
    pytest.param(lambda: _classification(("fraud", "legit")), id="classifier-strings"),
    pytest.param(_regression, id="regressor"),
])
def test_trial_scores_equal_mlflow_evaluate(problem, embedded_client):
    """A trial's value must be the metric a training run logs, also when the labels are not 0 and 1."""
    import mlflow
    import pandas as pd

    from airflow_mlops.tracking.metrics import CLASSIFIER_METRICS, REGRESSOR_METRICS, score

    estimator, features, target, model_type = problem()
    X, y = pd.DataFrame(features, columns=[f"f{i}" for i in range(5)]), pd.Series(target, name="label")
    model = estimator.fit(X[:200], y[:200])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
        evaluated = mlflow.models.evaluate(
            info.model_uri, X[200:].assign(label=y[200:].to_numpy()), targets="label", model_type=model_type,
            evaluators=["default"], evaluator_config={"default": {"log_model_explainability": False}},
        ).metrics
    for metric in CLASSIFIER_METRICS if model_type == "classifier" else REGRESSOR_METRICS:
        assert score(model, X[200:], y[200:], metric, model_type) == pytest.approx(evaluated[metric]), metric


SHARED_OPTIONS = dict(objective="tests.train_functions:shared_study_objective", metric="loss", direction="minimize")


def shared_worker(tmp_path, snapshot_uri, task_id, try_number=1, **operator):
    """An attempt of task ``task_id`` of the DAG run, with its own output and log files."""
    config = tune_config(tmp_path, snapshot_uri, try_number, **operator)
    config.update(task_id=task_id, output=str(tmp_path / f"{task_id}-{try_number}.json"))
    return config


def log_of(config) -> str:
    return Path(config["output"]).with_suffix(".log").read_text()[-3000:]


@pytest.fixture
def workers():
    """Worker processes a test starts; any still running at the end is killed."""
    started: list = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_together(workers, markers, *configs, env=None):
    """One process per config (``env`` by config index); once each is in its first trial, all go on."""
    env = env or {}
    for index, config in enumerate(configs):
        workers.append(run_in_process(config, {**os.environ, **env.get(index, {})}))
    deadline = time.monotonic() + 60
    while len(list(markers.glob("ready-*"))) < len(configs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in workers), [log_of(c) for c in configs]
        time.sleep(0.05)
    (markers / "go").touch()
    return workers


def test_a_trial_gives_up_its_slot_when_n_trials_before_it_are_complete_or_under_way(airflow_home):
    """The exactness rule of a shared study, on trials in each state: FAIL trials do not count,
    COMPLETE, RUNNING and WAITING ones do; the worker that created a surplus trial stops."""
    import optuna

    from airflow_mlops.hooks.optuna import OptunaStorageHook
    from airflow_mlops.tracking.tags import SURPLUS_ATTR
    from airflow_mlops.tuning.study import claim_slot

    storage = OptunaStorageHook().get_storage()
    study = optuna.create_study(study_name="slots", storage=storage)
    study.tell(study.ask(), 1.0)  # 0: COMPLETE
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # 1: FAIL
    study.enqueue_trial({})  # 2: WAITING
    storage.create_new_trial(storage.get_study_id_from_name("slots"))  # 3: RUNNING in another worker

    study.optimize(lambda trial: claim_slot(trial, 3) or 2.0, n_trials=5)

    trials = {t.number: t for t in study.get_trials()}
    assert trials[2].state.name == "COMPLETE"  # taken first; only 0 counts ahead of it
    assert trials[4].state.name == "PRUNED" and trials[4].user_attrs[SURPLUS_ATTR]  # 0, 2 and 3 ahead of it
    assert sorted(trials) == [0, 1, 2, 3, 4]  # and the worker stopped there
    study.tell(3, 3.0)
    assert [t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))] == [0, 2, 3]


def test_in_a_shared_study_a_trial_no_worker_marked_is_failed_once_older_than_the_grace_period(airflow_home):
    """It may be a live worker's, about to mark it; a dead worker's may never have sent a heartbeat to go stale."""
    from datetime import datetime, timedelta

    import optuna
    import sqlalchemy

    from airflow_mlops.hooks.optuna import OptunaStorageHook
    from airflow_mlops.tuning.study import fail_trials_of_dead_attempts

    storage = OptunaStorageHook().get_storage(heartbeat_interval=1, grace_period=60)  # no machine is that slow
    study = optuna.create_study(study_name="unmarked", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    fail_trials_of_dead_attempts(study, storage, "retrain.run-1.tune.0", shared=True)
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    with storage.engine.begin() as connection:  # the trial started just over the grace period ago (Optuna's naive local time)
        connection.execute(sqlalchemy.text("UPDATE trials SET datetime_start = :start WHERE trial_id = :id"),
                           {"start": datetime.now() - timedelta(seconds=61), "id": trial._trial_id})
    fail_trials_of_dead_attempts(study, storage, "retrain.run-1.tune.0", shared=True)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "WAITING"]  # and re-queued


def test_best_of_picks_the_best_tuning_result_for_the_direction():
    from airflow_mlops.tuning import best_of

    results = [{"best_params": {"C": 1}, "best_value": 0.8}, None, {"best_params": {"C": 2}, "best_value": 0.9},
               {"best_params": {"C": 3}, "best_value": 0.7}]
    assert best_of(results, "maximize")["best_params"] == {"C": 2}
    assert best_of(iter(results), "minimize")["best_params"] == {"C": 3}
    with pytest.raises(MlopsError, match="direction must be maximize or minimize, got 'max'"):
        best_of(results, "max")
    with pytest.raises(MlopsError, match="no tuning result"):
        best_of([None], "maximize")


def test_a_task_joining_a_shared_study_on_other_inputs_is_refused_before_any_trial(tmp_path, snapshot, embedded_client):
    from airflow_mlops.operators import OptunaTuneOperator

    assert "study_name" in OptunaTuneOperator.template_fields
    _, record = snapshot
    options = dict(estimator="sklearn.linear_model.LogisticRegression", n_trials=2, study_name="fraud.shared",
                   search_space={"C": {"type": "float", "low": 0.01, "high": 10, "log": True}})
    first = run_attempt({**tune_config(tmp_path, record.uri, 1, **options), "task_id": "tune_0"})["result"]
    assert first["study_name"] == "fraud.shared" and first["n_complete"] == 2

    other_space = {**options, "search_space": {"C": {"type": "float", "low": 0.1, "high": 100, "log": True}}}
    with pytest.raises(MlopsError, match=r"^study 'fraud.shared' was made from other inputs than this task's "
                                         r"\(differing: space\): the tasks sharing a study must tune on the same data"):
        run_attempt({**tune_config(tmp_path, record.uri, 1, **other_space), "task_id": "tune_1"})
    assert len(trials_of("fraud.shared")) == 2
    assert {r.data.tags["airflow.task_id"] for r in runs_of(embedded_client, tmp_path.name)} == {"tune_0"}

    # The same inputs join it: the study already has its trials, so the task returns its best at once.
    joined = run_attempt({**tune_config(tmp_path, record.uri, 1, **options), "task_id": "tune_2"})["result"]
    assert (joined["best_params"], joined["best_value"], joined["n_complete"]) == (
        first["best_params"], first["best_value"], 2)
    assert len(trials_of("fraud.shared")) == 2
    assert embedded_client.get_run(joined["parent_run_id"]).info.status == "FINISHED"


@pytest.mark.postgres
def test_workers_sharing_a_study_make_exactly_n_trials_together_each_run_once(
    tmp_path, snapshot, optuna_postgres, mlflow_conn, markers, monkeypatch, workers
):
    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.hooks.optuna import OptunaStorageHook
    from airflow_mlops.tracking.tags import OWNER_ATTR, SURPLUS_ATTR

    _, record = snapshot
    monkeypatch.setenv("TRIAL_SLEEP", "0.2")
    OptunaStorageHook(optuna_postgres).get_storage()  # the schema, ready before the race
    options = dict(SHARED_OPTIONS, n_trials=8, study_name="fraud.shared", optuna_conn_id=optuna_postgres,
                   mlflow_conn_id=mlflow_conn, heartbeat_interval=2, grace_period=30)
    configs = [shared_worker(tmp_path, record.uri, f"tune_{i}", **options) for i in range(2)]
    for config, process in zip(configs, start_together(workers, markers, *configs)):
        assert process.wait(timeout=60) == 0, log_of(config)
    results = [json.loads(Path(config["output"]).read_text())["result"] for config in configs]

    trials = trials_of("fraud.shared", optuna_postgres)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    surplus = [t for t in trials if t.user_attrs.get(SURPLUS_ATTR)]
    assert len(complete) == 8 and len(trials) == 8 + len(surplus)  # nothing failed, nothing left running
    assert all(t.state.name == "PRUNED" and not t.params for t in surplus)
    best = min(complete, key=lambda t: t.value)
    for result in results:  # each task returns the whole study's best
        assert (result["study_name"], result["n_complete"], result["best_value"], result["best_params"]) == (
            "fraud.shared", 8, best.value, best.params)

    with MlflowHook(mlflow_conn).tracking_session() as client:
        runs = runs_of(client, tmp_path.name)
    parents = {r.data.tags["airflow.task_id"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents) == ["tune_0", "tune_1"]
    assert sorted(p.info.run_id for p in parents.values()) == sorted(r["parent_run_id"] for r in results)
    assert all(p.info.status == "FINISHED" and p.data.tags["optuna.study_name"] == "fraud.shared" for p in parents.values())
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    # every complete trial has one run, and surplus trials none; the trials were shared out
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == sorted(t.number for t in complete)
    assert {c.data.tags["airflow.task_id"] for c in children} == set(parents)
    ran_by = {t.number: t.user_attrs[OWNER_ATTR] for t in complete}
    for child in children:  # under the parent run of the task that ran it
        task = child.data.tags["airflow.task_id"]
        assert ran_by[int(child.data.tags["optuna.trial_number"])] == f"retrain.{configs[0]['run_id']}.{task}.-1"
        assert child.data.tags["mlflow.parentRunId"] == parents[task].info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["optuna.study_name"] == "fraud.shared"
    assert len({c.data.params["x"] for c in children}) == 8  # no point tried twice


@pytest.mark.postgres
def test_a_worker_killed_mid_trial_in_a_shared_study_loses_nothing_and_its_retry_runs_no_extra_trial(
    tmp_path, snapshot, optuna_postgres, mlflow_conn, markers, monkeypatch, workers
):
    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.hooks.optuna import OptunaStorageHook
    from airflow_mlops.tracking.tags import OWNER_ATTR

    _, record = snapshot
    monkeypatch.setenv("TRIAL_SLEEP", "0.3")
    OptunaStorageHook(optuna_postgres).get_storage()
    options = dict(SHARED_OPTIONS, n_trials=6, study_name="fraud.killed", optuna_conn_id=optuna_postgres,
                   mlflow_conn_id=mlflow_conn, heartbeat_interval=1, grace_period=4)
    victim, survivor = (shared_worker(tmp_path, record.uri, task, **options) for task in ("tune_0", "tune_1"))
    processes = start_together(workers, markers, victim, survivor, env={0: {"KILL_IN_TRIAL": "2"}})
    deadline = time.monotonic() + 60
    while not (markers / "blocked").exists():  # the victim finished a trial and is in its second one
        assert time.monotonic() < deadline and processes[0].poll() is None, log_of(victim)
        time.sleep(0.05)
    killed = json.loads((markers / "blocked").read_text())["trial"]
    processes[0].send_signal(signal.SIGKILL)
    assert processes[0].wait() == -signal.SIGKILL
    assert processes[1].wait(timeout=60) == 0, log_of(survivor)

    victim_owner, survivor_owner = (f"retrain.{victim['run_id']}.{task}.-1" for task in ("tune_0", "tune_1"))
    trials = trials_of("fraud.killed", optuna_postgres)
    states = {t.number: t.state.name for t in trials}
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6 and "RUNNING" not in states.values() and "WAITING" not in states.values()
    assert states[killed] == "FAIL"  # failed by the survivor once stale, re-queued, and run by it
    (replacement,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert replacement.state.name == "COMPLETE" and replacement.user_attrs[OWNER_ATTR] == survivor_owner
    kept = [t.number for t in complete if t.user_attrs[OWNER_ATTR] == victim_owner]
    assert kept  # the victim's complete trial counts
    assert json.loads(Path(survivor["output"]).read_text())["result"]["n_complete"] == 6

    # The victim's retry: the study is done, so it runs no trial, and records its killed trial's end.
    result = run_attempt({**victim, "try_number": 2})["result"]
    assert [(t.number, t.state.name) for t in trials_of("fraud.killed", optuna_postgres)] == [
        (t.number, t.state.name) for t in trials]
    assert result["n_complete"] == 6 and result["best_value"] == min(t.value for t in complete)

    with MlflowHook(mlflow_conn).tracking_session() as client:
        runs = runs_of(client, tmp_path.name)
    assert all(r.info.status != "RUNNING" for r in runs)
    parents = {r.data.tags["airflow.task_id"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert parents["tune_0"].info.run_id == result["parent_run_id"] and len(parents) == 2
    assert all(p.info.status == "FINISHED" for p in parents.values())
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    numbers = sorted(int(c.data.tags["optuna.trial_number"]) for c in children)
    assert numbers == sorted([t.number for t in complete] + [killed])  # each trial that ran, once
    victims = {int(c.data.tags["optuna.trial_number"]): c for c in children
               if c.data.tags["mlflow.parentRunId"] == result["parent_run_id"]}
    assert sorted(victims) == sorted(kept + [killed])
    assert victims[killed].info.status == "FAILED" and victims[killed].data.tags["airflow_mlops.error"].startswith("stale:")
