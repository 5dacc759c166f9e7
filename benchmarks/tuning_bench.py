"""Per-trial cost of tracking a study: 50 trials of a small model (a) plain Optuna, (b) Optuna with
optuna-integration's MLflowCallback, (c) OptunaTuneOperator (nested run per trial, parent summary, plots).

All keep the study in the same kind of storage (SQLite RDB, default settings) and MLflow in the
embedded SQLite store, so the differences are tracking, not storage. (a2) is plain Optuna on a
storage with the heartbeat (c) needs to resume after a crash, which splits (c)'s overhead into
heartbeat and tracking. Variants alternate over ``--rounds`` rounds; medians are printed (SQLite
commit times on a shared disk vary run to run). Each variant also runs n/5 trials, so the slope
between the two sizes gives the marginal cost per trial and the intercept the fixed cost per study
(the operator's parent run, dataset, environment and plots). Target: (c)'s per-trial overhead no
worse than (b)'s.

    python benchmarks/tuning_bench.py [--trials 50] [--rows 2000] [--rounds 3] [--study-db URL]

``--study-db`` puts every variant's study in that database instead (e.g. an empty PostgreSQL
database, as in production); the operator reaches it through its ``optuna_default`` connection.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import run_task, timed

SPACE = {"C": {"type": "float", "low": 1e-3, "high": 100.0, "log": True}}
ESTIMATOR = "sklearn.linear_model.LogisticRegression"


def make_data(rows: int, folder: Path):
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=10, random_state=0)
    folder.mkdir(parents=True)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(10)]).assign(label=y)
    frame.to_csv(folder / "train.csv", index=False)
    return frame


def hand_objective(frame):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        frame.drop(columns=["label"]), frame["label"], test_size=0.2, random_state=42, stratify=frame["label"]
    )

    def objective(trial):
        model = LogisticRegression(C=trial.suggest_float("C", 1e-3, 100.0, log=True), random_state=42)
        model.fit(X_train, y_train)
        return roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])

    return objective


def plain(frame, storage: str | object, trials: int) -> None:
    import optuna

    study = optuna.create_study(storage=storage, direction="maximize", sampler=optuna.samplers.TPESampler(seed=42))
    study.optimize(hand_objective(frame), n_trials=trials)


def plain_with_heartbeat(frame, trials: int) -> None:
    """Plain Optuna on the storage the operator builds: the embedded database, heartbeat and stale-trial retry."""
    from airflow_mlops.hooks.optuna import OptunaStorageHook

    plain(frame, OptunaStorageHook().get_storage(), trials)


def with_callback(frame, storage_url: str, trials: int, tracking_uri: str) -> None:
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    callback = MLflowCallback(tracking_uri=tracking_uri, metric_name="roc_auc",
                              mlflow_kwargs={"experiment_id": _experiment(tracking_uri, "bench-callback")})
    study = optuna.create_study(storage=storage_url, direction="maximize", sampler=optuna.samplers.TPESampler(seed=42))
    study.optimize(hand_objective(frame), n_trials=trials, callbacks=[callback])


def _experiment(tracking_uri: str, name: str) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    existing = client.get_experiment_by_name(name)
    return existing.experiment_id if existing else client.create_experiment(name)


def through_operator(snapshot_uri: str, trials: int) -> None:
    from airflow_mlops.operators import OptunaTuneOperator

    run_task(
        OptunaTuneOperator, dag_id="tuning_bench", run_id=f"bench-{time.time_ns()}",
        task_id="tune", input_snapshot=snapshot_uri, target="label", estimator=ESTIMATOR,
        search_space=SPACE, n_trials=trials, experiment_name="bench-operator",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--study-db", default=None, help="SQLAlchemy URL of an empty study database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuning-bench-") as work:
        os.environ["AIRFLOW_HOME"] = work
        import optuna

        from airflow_mlops.config import embedded_tracking_uri, mlops_home
        from airflow_mlops.snapshots import SnapshotStore

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        frame = make_data(args.rows, Path(work) / "data")
        snapshot_uri = SnapshotStore.open(str(mlops_home() / "snapshots")).snapshot(Path(work) / "data").uri
        tracking_uri = embedded_tracking_uri()
        # Every variant uses the operator's study database: its embedded SQLite, or --study-db.
        storage_url = args.study_db or f"sqlite:///{mlops_home() / 'optuna.db'}"
        if args.study_db:
            os.environ["AIRFLOW_CONN_OPTUNA_DEFAULT"] = json.dumps({"conn_type": "optuna", "extra": {"url": args.study_db}})
        # Warm-up: imports, schema creation of both SQLite stores, first experiment lookups.
        plain(frame, storage_url, 2), with_callback(frame, storage_url, 2, tracking_uri)
        through_operator(snapshot_uri, 2)

        n, small = args.trials, max(1, args.trials // 5)
        variants = {
            "a": lambda k: plain(frame, storage_url, k),
            "a2": lambda k: plain_with_heartbeat(frame, k),
            "b": lambda k: with_callback(frame, storage_url, k, tracking_uri),
            "c": lambda k: through_operator(snapshot_uri, k),
        }
        times = {(name, k): [] for name in variants for k in (small, n)}
        for _ in range(args.rounds):
            for name, run in variants.items():
                for k in (small, n):
                    times[(name, k)].append(timed(lambda: run(k)))
        total = {key: statistics.median(values) for key, values in times.items()}
        slope = {name: (total[(name, n)] - total[(name, small)]) / (n - small) for name in variants}
        fixed = {name: total[(name, n)] - slope[name] * n for name in variants}

        backend = storage_url.split(":", 1)[0]
        print(f"\nLogisticRegression(C) on {args.rows} rows x 10 features, study storage {backend}, "
              f"MLflow embedded SQLite, medians of {args.rounds}")
        print(f"{'':34}{n} trials    per trial (all)   marginal/trial   overhead/trial   fixed/study")
        for label, name in (("(a) plain Optuna", "a"), ("(a2) plain Optuna + heartbeat", "a2"),
                            ("(b) Optuna + MLflowCallback", "b"), ("(c) OptunaTuneOperator", "c")):
            print(f"{label:<34}{total[(name, n)]:7.2f} s  {1000 * total[(name, n)] / n:9.1f} ms   "
                  f"{1000 * slope[name]:9.1f} ms   {1000 * (slope[name] - slope['a']):9.1f} ms   {fixed[name]:8.2f} s")
        print(f"c/b at {n} trials: {total[('c', n)] / total[('b', n)]:.3f}; marginal overhead per trial: "
              f"(c) {1000 * (slope['c'] - slope['a']):.1f} ms vs (b) {1000 * (slope['b'] - slope['a']):.1f} ms "
              f"(target: (c) <= (b)); of (c)'s, the heartbeat's share {1000 * (slope['a2'] - slope['a']):.1f} ms")


if __name__ == "__main__":
    main()
