"""The embedded MLflow and Optuna stores survive concurrent first use and a kill while being created."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.conftest import REPO, wait_until

# Once its imports are done it says so with a ready file, and once the start file appears (so the
# processes meet the fresh stores together) it opens the default stores through the hooks, as a task
# does, then writes to both.
FIRST_USE = """
import os, sys, time
from pathlib import Path
from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.optuna import OptunaStorageHook
import mlflow, optuna
start = Path(sys.argv[1])
Path(f"{start}.ready-{sys.argv[2]}").touch()
while not start.exists():
    time.sleep(0.005)
client = MlflowHook().get_conn()
client.create_experiment(f"experiment-{sys.argv[2]}")
study = optuna.create_study(study_name=f"study-{sys.argv[2]}", storage=OptunaStorageHook().get_storage())
study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
print("ok")
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_eight_processes_opening_fresh_default_stores_at_once_all_succeed(airflow_home, tmp_path):
    start = tmp_path / "start"
    processes = [_python(FIRST_USE, str(start), str(i)) for i in range(8)]
    ready = [tmp_path / f"start.ready-{i}" for i in range(8)]
    assert wait_until(lambda: all(path.exists() for path in ready) or any(p.poll() is not None for p in processes)), \
        "the processes never all reached the start line"
    start.touch()
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [p.returncode for p in processes] == [0] * 8, "\n---\n".join(o[-3000:] for o in outputs)

    import mlflow
    import optuna

    client = mlflow.MlflowClient(f"sqlite:///{airflow_home / 'airflow_mlops' / 'mlflow.db'}")
    names = {e.name for e in client.search_experiments()}
    assert {f"experiment-{i}" for i in range(8)} <= names
    studies = optuna.get_all_study_summaries(f"sqlite:///{airflow_home / 'airflow_mlops' / 'optuna.db'}")
    assert sorted(s.n_trials for s in studies) == [2] * 8


def test_process_killed_while_creating_the_store_leaves_one_the_next_process_opens(airflow_home):
    home = airflow_home / "airflow_mlops"
    creator = _python("from airflow_mlops.embedded import embedded_tracking_store; embedded_tracking_store()")

    def schema_being_written() -> bool:
        """The staging file holds the first committed tables, and is not yet renamed into place."""
        for staging in home.glob(".mlflow.db.*.building") if home.exists() else ():
            try:
                if staging.stat().st_size > 0:
                    return True
            except FileNotFoundError:  # renamed meanwhile: the build finished
                pass
        return False

    assert wait_until(lambda: schema_being_written() or creator.poll() is not None, interval=0.002), \
        "the creator never started building the store"
    os.kill(creator.pid, signal.SIGKILL)
    creator.wait()
    assert creator.returncode == -signal.SIGKILL, "the creator finished before it could be killed"
    assert not (home / "mlflow.db").exists()  # nothing half-built in place

    opener = _python(
        "from airflow_mlops.hooks.mlflow import MlflowHook\n"
        "client = MlflowHook().get_conn(); client.create_experiment('after-the-kill')\n"
        "print([e.name for e in client.search_experiments()])"
    )
    output = opener.communicate(timeout=300)[0]
    assert opener.returncode == 0, output
    assert "after-the-kill" in output and "Default" in output
    assert not list(home.glob(".mlflow.db.*.building*"))  # the dead builder's file was cleared


def test_snapshot_store_whose_creator_died_before_its_marker_is_still_a_new_store(tmp_path):
    from airflow_mlops.snapshots import SnapshotStore

    store_dir = tmp_path / "store"
    (store_dir / "tmp").mkdir(parents=True)
    (store_dir / "tmp" / "0123abcd.part").write_bytes(b'{"form')  # the marker, half written, never renamed
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("a,b\n1,2\n")

    record = SnapshotStore.open(str(store_dir)).snapshot(data)

    assert SnapshotStore.open(str(store_dir)).records()[0].snapshot_id == record.snapshot_id
