"""Retention: keep rules over records (pure), and forget / gc through lineage against the tests' MLflow server
(PostgreSQL backend, basic auth): what a registered model version depends on is never forgotten nor collected.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from types import SimpleNamespace

import pytest

from airflow_mlops.cli import main
from airflow_mlops.errors import MlopsError
from airflow_mlops.retention import KeepRules, group_of, plan, protected_snapshots, remove_stale_staging, render
from airflow_mlops.retention import protection
from airflow_mlops.snapshots import SnapshotRecord, SnapshotStore
from airflow_mlops.tracking.runs import identity_tags
from airflow_mlops.tracking.tags import PARENT_RUN_TAG, SNAPSHOT_TAG, STUDY_TAG
from tests.conftest import MLFLOW_ADMIN, MLFLOW_ADMIN_PASSWORD

# ----------------------------------------------------------------------------- the keep rules, on records


def sid(n: int) -> str:
    """The snapshot id numbered ``n`` (two digits, then hex padding): ``n`` is its first two characters."""
    return f"{n:02d}".ljust(64, "a")


def record(n: int, created: str, *, task: str | None = "snap", source: str = "/data/in") -> SnapshotRecord:
    airflow = {"dag_id": "daily", "run_id": f"r{n}", "task_id": task, "map_index": -1} if task else {}
    return SnapshotRecord(sid(n), "/store", created, 1, 1, source, "h", airflow=airflow)


def daily_records() -> list[SnapshotRecord]:
    """Task daily/snap at 02:00 on 2026-11-18 (Wed, ISO week 47) .. 11-30 (Mon, week 49), plus 14:00 on 11-30 (id 99)."""
    days = [record(day, f"2026-11-{day}T02:00:00+00:00") for day in range(18, 31)]
    return [*days, record(99, "2026-11-30T15:00:00+01:00")]  # 14:00 UTC: the newest of its day


def decided(decisions) -> dict[str, tuple[str, str]]:
    """{short id: (action, reason)}: ids 18..30 and 99 print as their number."""
    return {d.snapshot_id[:2]: (d.action, d.reason) for d in decisions}


def test_keep_last_daily_and_weekly_take_the_newest_per_bucket_and_any_rule_keeps():
    decisions = decided(plan(daily_records(), KeepRules(last=2, daily=3, weekly=3), protected={}))

    kept = {sid: reason for sid, (action, reason) in decisions.items() if action == "keep"}
    assert kept == {
        "99": "keep-last 2; keep-daily 2026-11-30; keep-weekly 2026-W49",
        "30": "keep-last 2",  # not the newest of its day: kept by keep-last only
        "29": "keep-daily 2026-11-29; keep-weekly 2026-W48",
        "28": "keep-daily 2026-11-28",
        "22": "keep-weekly 2026-W47",  # Sunday, the newest of week 47
    }
    assert {sid for sid, (action, _) in decisions.items() if action == "forget"} == {
        str(day) for day in (18, 19, 20, 21, 23, 24, 25, 26, 27)}
    assert decisions["18"] == ("forget", "no keep rule matches")


def test_rules_count_per_group_dag_task_else_source_and_a_snapshot_in_two_groups_is_kept_by_either():
    other_task = [record(n, f"2026-11-0{n - 40}T00:00:00+00:00", task="other") for n in (41, 42)]
    by_source = [record(n, f"2026-10-0{n - 50}T00:00:00+00:00", task=None, source="/data/manual") for n in (51, 52)]
    shared = record(18, "2026-12-01T00:00:00+00:00", task=None, source="/data/manual")  # day 18's bytes again

    decisions = plan([*daily_records(), *other_task, *by_source, shared], KeepRules(last=1), protected={})

    assert group_of(other_task[0]) == "daily/other" and group_of(by_source[0]) == "/data/manual"
    assert [(d.snapshot_id[:2], d.groups) for d in decisions if d.action == "keep"] == [
        ("18", ("/data/manual", "daily/snap")), ("99", ("daily/snap",)), ("42", ("daily/other",))]
    assert decisions[0].created == shared.created  # the newest record of a snapshot dates it


def test_protection_keeps_with_its_reason_and_forgotten_snapshots_no_longer_count_or_come_back_if_protected():
    forgotten = {sid(99), sid(30), sid(20)}
    protected = {sid(20): "model fraud v3 trains on it", sid(18): f"parent of {sid(20)[:12]} (model fraud v3)"}

    decisions = decided(plan(daily_records(), KeepRules(last=1), protected, forgotten))

    assert decisions["29"] == ("keep", "keep-last 1")  # 99 and 30 are forgotten: 29 is now the newest
    assert decisions["20"] == ("unforget", "model fraud v3 trains on it")
    assert decisions["18"] == ("keep", f"parent of {sid(20)[:12]} (model fraud v3)")
    assert "99" not in decisions and "30" not in decisions
    table = render(plan(daily_records(), KeepRules(last=1), protected, forgotten)).splitlines()
    assert table[0].split() == ["ACTION", "SNAPSHOT", "CREATED", "GROUP", "REASON"]
    assert table[1].split()[:5] == ["keep", sid(29)[:12], "2026-11-29", "02:00:00", "daily/snap"]


@pytest.mark.parametrize("values, message", [
    ({}, "no keep rule"), ({"last": -1, "daily": 3}, "--keep-last must be a whole number"),
    ({"weekly": "2.5"}, "--keep-weekly must be"), ({"daily": "abc"}, "--keep-daily must be"),
])
def test_bad_rules_are_refused_in_one_line(values, message):
    with pytest.raises(MlopsError, match=message) as error:
        KeepRules.parse(**values)
    assert "\n" not in str(error.value)
    assert KeepRules.parse(last="2", daily=None, weekly=" 1 ") == KeepRules(2, 0, 1)


def test_an_operator_s_bad_rule_is_named_as_its_argument():
    with pytest.raises(MlopsError, match=r"^keep_daily must be a whole number, got 'abc'$"):
        KeepRules.parse(daily="abc", spelling="keep_{}")
    with pytest.raises(MlopsError, match="give at least one of keep_last, keep_daily, keep_weekly above 0"):
        KeepRules.parse(spelling="keep_{}")


def test_only_staging_folders_idle_for_a_day_are_removed(tmp_path):
    root = tmp_path / "predict-staging"
    killed, running = root / "a", root / "b"
    (killed / "part").mkdir(parents=True)
    (killed / "part" / "x.parquet").write_text("x")
    (running / "old").mkdir(parents=True)
    (running / "old" / "y.parquet").write_text("y")
    day_ago = time.time() - 25 * 3600
    for path in (killed, killed / "part", killed / "part" / "x.parquet", running, running / "old"):
        os.utime(path, (day_ago, day_ago))  # running/old/y.parquet was written just now

    assert remove_stale_staging(root, dry_run=True) == [killed] and killed.exists()
    assert remove_stale_staging(root) == [killed]
    assert not killed.exists() and running.exists()
    assert remove_stale_staging(tmp_path / "none") == []


# ----------------------------------------------------------------------------- forget and gc through lineage


@pytest.fixture
def client(mlflow_conn):
    from airflow_mlops.hooks.mlflow import MlflowHook

    with MlflowHook(mlflow_conn).tracking_session() as session:
        yield session


def take(store: SnapshotStore, root, name: str, task: str, **kwargs) -> str:
    """A one-file snapshot of ``name`` taken by task ``retrain/<task>``; returns its id (unique to ``root``: the
    MLflow server is shared, and the same bytes in another test's store would be the same snapshot)."""
    folder = root / name
    folder.mkdir()
    (folder / "data.csv").write_text(f"{root}/{name}\n" * 50)
    return store.snapshot(folder, airflow={"dag_id": "retrain", "run_id": "r1", "task_id": task, "map_index": -1},
                          **kwargs).snapshot_id


@pytest.fixture
def lab(tmp_path, client):
    """raw -> features, read by the training run of model version 1 (no alias); the DAG run's tuning run reads
    tune_input; version 1 wrote predictions. Each task also took a newer, unrelated snapshot (keep-last 1 keeps it)."""
    store = SnapshotStore.open(str(tmp_path / "store"))
    ids = SimpleNamespace()
    ids.raw = take(store, tmp_path, "raw", "snapshot_raw")
    ids.old = take(store, tmp_path, "old", "snapshot_raw")
    ids.raw2 = take(store, tmp_path, "raw2", "snapshot_raw")
    ids.features = take(store, tmp_path, "features", "features", parents=[ids.raw])
    ids.features2 = take(store, tmp_path, "features2", "features", parents=[ids.raw2])
    ids.tune_input = take(store, tmp_path, "tune_input", "tune_data")
    ids.tune_input2 = take(store, tmp_path, "tune_input2", "tune_data")
    model = f"retention-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(model)
    dag_run = identity_tags({"dag_id": "retrain", "run_id": f"scheduled__{model}"})
    client.create_run(experiment, tags={**dag_run, STUDY_TAG: "study", SNAPSHOT_TAG: ids.tune_input})
    client.create_run(experiment, tags={**dag_run, PARENT_RUN_TAG: "x" * 32, SNAPSHOT_TAG: ids.old})  # a trial
    training = client.create_run(experiment, tags={**dag_run, SNAPSHOT_TAG: ids.features}).info.run_id
    client.create_registered_model(model)
    client.create_model_version(model, f"runs:/{training}/model", run_id=training)
    ids.predictions = take(store, tmp_path, "predictions", "score",
                           parents=[ids.features], extra={"model": {"name": model, "version": "1", "run_id": training}})
    ids.predictions2 = take(store, tmp_path, "predictions2", "score", parents=[ids.features2])
    return SimpleNamespace(store=store, ids=ids, model=model, experiment=experiment, tmp_path=tmp_path)


@pytest.fixture
def cli_env(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", MLFLOW_ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_ADMIN_PASSWORD)
    return mlflow_server["url"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(table: str) -> dict[str, tuple[str, str]]:
    """{12-digit id: (action, reason)} from the decision table."""
    found = {}
    for line in table.splitlines()[1:]:
        if line.startswith(("keep", "forget", "unforget")):
            action, short = line.split()[:2]
            found[short] = (action, line.split("  ")[-1].strip())
    return found


@pytest.mark.postgres
def test_protection_is_what_every_registered_version_trains_on_and_its_ancestors_not_what_it_wrote(lab, client):
    ids = lab.ids
    tuning = client.search_runs([lab.experiment], filter_string=f"tags.`{STUDY_TAG}` = 'study'")[0].info.run_id
    label = f"model {lab.model} v1"

    assert protected_snapshots(lab.store, client) == {
        ids.features: f"{label} trains on it",
        ids.raw: f"parent of {ids.features[:12]} ({label})",
        ids.tune_input: f"input of tuning run {tuning[:12]} ({label})",
    }


@pytest.mark.postgres
def test_protection_reads_every_page_of_the_dag_runs_runs_not_only_the_first(lab, client, monkeypatch):
    """Two runs a page, and three trials started after the tuning run: the tuning run is on a later page."""
    monkeypatch.setattr(sys.modules[protection.all_pages.__module__], "_PAGE", 2)  # the page size of all_pages
    ids = lab.ids
    dag_run = identity_tags({"dag_id": "retrain", "run_id": f"scheduled__{lab.model}"})
    later = int(time.time() * 1000) + 3_600_000
    for n in range(3):
        client.create_run(lab.experiment, start_time=later + n, tags={**dag_run, PARENT_RUN_TAG: "y" * 32})
    tokens = []
    search_runs = client.search_runs

    def recorded(*args, **kwargs):
        if lab.model in kwargs.get("filter_string", ""):  # the search for the DAG run's runs
            tokens.append(kwargs["page_token"])
        return search_runs(*args, **kwargs)

    monkeypatch.setattr(client, "search_runs", recorded)
    tuning = search_runs([lab.experiment], filter_string=f"tags.`{STUDY_TAG}` = 'study'")[0].info.run_id

    assert protected_snapshots(lab.store, client)[ids.tune_input] == f"input of tuning run {tuning[:12]} (model {lab.model} v1)"
    assert len(tokens) == 3 and tokens[0] is None and all(tokens[1:])  # six runs, two a page


@pytest.mark.postgres
def test_forget_dry_run_shows_each_decision_and_why_and_changes_nothing(lab, cli_env, capsys):
    ids = lab.ids
    code, out, err = cli(capsys, "forget", "--store", lab.store.uri, "--tracking-uri", cli_env, "--keep-last", "1", "--dry-run")

    assert code == 0, err
    table = rows(out)
    assert table[ids.features[:12]] == ("keep", f"model {lab.model} v1 trains on it")
    assert table[ids.raw2[:12]] == ("keep", "keep-last 1")
    assert table[ids.predictions[:12]] == ("forget", "no keep rule matches")  # what the version wrote is not needed
    assert table[ids.old[:12]] == ("forget", "no keep rule matches")  # a trial's input is not the tuning run's
    assert out.splitlines()[-1] == "forget: keep 7, forget 2, unforget 0 (dry run: nothing changed)"
    assert lab.store.forgotten() == {}


@pytest.mark.parametrize("rules, message", [([], "no keep rule"), (["--keep-daily", "-1"], "--keep-daily must be")])
def test_forget_refuses_bad_rules_before_opening_anything(tmp_path, capsys, rules, message):
    code, out, err = cli(capsys, "forget", "--store", str(tmp_path / "nowhere"), "--tracking-uri", "http://127.0.0.1:9", *rules)

    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.postgres
def test_forget_then_gc_never_delete_what_a_registered_version_needs_even_one_registered_in_between(lab, client, cli_env, capsys):
    ids = lab.ids
    code, out, err = cli(capsys, "forget", "--store", lab.store.uri, "--tracking-uri", cli_env, "--keep-last", "1")
    assert code == 0, err
    assert set(lab.store.forgotten()) == {ids.predictions, ids.old}

    # between forget and gc, version 2 is registered from a run that trained on the forgotten `old`
    run = client.create_run(lab.experiment, tags={SNAPSHOT_TAG: ids.old}).info.run_id
    client.create_model_version(lab.model, f"runs:/{run}/model", run_id=run)
    code, out, err = cli(capsys, "gc", "--store", lab.store.uri, "--tracking-uri", cli_env, "--grace-seconds", "0")

    assert code == 0, err
    assert f"{ids.old[:12]}  kept: model {lab.model} v2 trains on it" in out
    store = SnapshotStore.open(lab.store.uri)
    assert store.forgotten() == {}  # `old` is un-forgotten, `predictions` is gone
    assert store.snapshot_ids() == set(vars(ids).values()) - {ids.predictions}
    for snapshot_id in store.snapshot_ids():
        assert store.restore(snapshot_id, lab.tmp_path / "restored" / snapshot_id)
    assert store.verify() == []
