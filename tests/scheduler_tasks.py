"""Task code of the scheduler tests' DAGs: per-run data, and training and tuning that stop where a
test kills them (on the first try only, so the retry runs through)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import time
from pathlib import Path

FAULT_MARKERS = "fault-markers"


def write_classification_data(folder: str, seed_text: str, rows: int = 300, key: str | None = None) -> str:
    """A small labelled table whose rows depend on ``seed_text`` (a logical date or a run id), with a
    row id column ``key`` when given."""
    import pandas as pd
    from sklearn.datasets import make_classification

    seed = int(hashlib.sha256(seed_text.encode()).hexdigest()[:8], 16)
    X, y = make_classification(n_samples=rows, n_features=5, n_informative=3, random_state=seed)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)]).round(6).assign(label=y)
    if key:
        frame.insert(0, key, range(rows))
    Path(folder).mkdir(parents=True, exist_ok=True)
    frame.to_csv(Path(folder) / "rows.csv", index=False)
    return folder


def marker_path(home: Path, dag_id: str, run_id: str, task_id: str) -> Path:
    return home / FAULT_MARKERS / f"{dag_id}.{run_id}.{task_id}.json"


def _leave_marker(ti, **info) -> None:
    """Say where the task process is (pid and ``info``) in its marker file, written atomically."""
    marker = marker_path(Path(os.environ["AIRFLOW_HOME"]), ti.dag_id, ti.run_id, ti.task_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.with_suffix(".tmp").write_text(json.dumps({"pid": os.getpid(), **info}))
    marker.with_suffix(".tmp").rename(marker)


def _wait_to_be_killed_on_first_try(**info) -> None:
    """On try 1: leave a marker, then wait for the test's SIGKILL."""
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    if ti.try_number != 1:
        return
    _leave_marker(ti, **info)
    time.sleep(600)
    raise RuntimeError("the test was to kill this process")


def train_killed_on_first_try(train_frame, hyperparams):
    """A logistic regression, trained after the MLflow run started; try 1 is killed before it finishes."""
    from sklearn.linear_model import LogisticRegression

    _wait_to_be_killed_on_first_try(stage="training")
    return LogisticRegression(max_iter=500).fit(train_frame.drop(columns=["label"]), train_frame["label"])


def objective_killed_after_three_trials(trial, data):
    """Tunes C of a logistic regression; try 1 is killed inside the fourth trial."""
    from optuna.trial import TrialState
    from sklearn.linear_model import LogisticRegression

    complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 3:
        _wait_to_be_killed_on_first_try(killed_trial=trial.number,
                                        complete={t.number: t.value for t in complete})
    from sklearn.model_selection import cross_val_score

    c = trial.suggest_float("C", 1e-3, 1e2, log=True)
    return float(cross_val_score(LogisticRegression(C=c, max_iter=500), data.X_train, data.y_train, cv=3).mean())


def killed_on_first_try_inside(target: str, truncate_output: bool = False):
    """A ``pre_execute`` hook: on try 1, the task process SIGKILLs itself when it calls ``target``
    (``module:function``), after a marker file records it; with ``truncate_output`` it first lets
    ``target(data, path)`` write and cuts the file at half (killed mid-write)."""

    def pre_execute(context) -> None:
        ti = context["ti"]
        if ti.try_number != 1:
            return
        module_name, function_name = target.split(":")
        module = importlib.import_module(module_name)
        original = getattr(module, function_name)

        def dying(*args, **kwargs):
            if truncate_output:
                original(*args, **kwargs)
                path = Path(args[1])
                with open(path, "r+b") as written:
                    written.truncate(path.stat().st_size // 2)
            _leave_marker(ti, killed_in=target)
            os.kill(os.getpid(), signal.SIGKILL)

        setattr(module, function_name, dying)

    return pre_execute
