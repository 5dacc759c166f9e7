"""Cost of tracking: the same scikit-learn training (a) plain, (b) with hand-written MLflow calls,
(c) through MLflowTrainOperator, all on the embedded SQLite store. Prints medians and c/b (target <= 1.15).

(b) is what users write today: start_run, log_params, fit, log_metrics, log_model. (c) records more
(input snapshot, code, environment, evaluation plots, retry bookkeeping) and must not cost much more.

    python benchmarks/tracking_bench.py [--rows 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from _common import execute_as_task, timed

ESTIMATOR_PARAMS = {"n_estimators": 100, "max_depth": 8}


def make_data(rows: int, folder: Path):
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=20, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)]).assign(label=y)
    folder.mkdir(parents=True)
    frame.to_csv(folder / "train.csv", index=False)
    return frame


def split(frame):
    from sklearn.model_selection import train_test_split

    X, y = frame.drop(columns=["label"]), frame["label"]
    return train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)


def plain(frame) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    X_train, X_test, y_train, y_test = split(frame)
    model = RandomForestClassifier(random_state=42, **ESTIMATOR_PARAMS).fit(X_train, y_train)
    predicted = model.predict(X_test)
    accuracy_score(y_test, predicted), f1_score(y_test, predicted), roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])


def hand_written(frame, experiment_id: str) -> None:
    import mlflow
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    X_train, X_test, y_train, y_test = split(frame)
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_params(ESTIMATOR_PARAMS)
        model = RandomForestClassifier(random_state=42, **ESTIMATOR_PARAMS).fit(X_train, y_train)
        predicted = model.predict(X_test)
        mlflow.log_metrics({
            "accuracy_score": accuracy_score(y_test, predicted),
            "f1_score": f1_score(y_test, predicted),
            "roc_auc": roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]),
        })
        mlflow.sklearn.log_model(
            model, name="model", input_example=X_train.head(5), skops_trusted_types=["sklearn.tree._tree.Tree"]
        )


def through_operator(snapshot_uri: str, attempt: int) -> None:
    from airflow_mlops.operators import MLflowTrainOperator

    execute_as_task(
        MLflowTrainOperator, "tracking_bench", f"bench-{attempt}",
        task_id="train", input_snapshot=snapshot_uri, target="label",
        estimator="sklearn.ensemble.RandomForestClassifier", hyperparams=ESTIMATOR_PARAMS,
        experiment_name="bench-operator",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as work:
        os.environ["AIRFLOW_HOME"] = work
        import mlflow

        from airflow_mlops.config import embedded_tracking_uri, mlops_home
        from airflow_mlops.snapshots import SnapshotStore

        frame = make_data(args.rows, Path(work) / "data")
        snapshot_uri = SnapshotStore.open(str(mlops_home() / "snapshots")).snapshot(Path(work) / "data").uri
        mlops_home().mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(embedded_tracking_uri())
        experiment_id = mlflow.create_experiment("bench-hand-written", artifact_location=f"file://{work}/hand")
        # Warm-up: imports, the SQLite schema migration and the first experiment lookups are one-off costs.
        plain(frame), hand_written(frame, experiment_id), through_operator(snapshot_uri, -1)

        times = {"a": [], "b": [], "c": []}
        for attempt in range(args.rounds):
            times["a"].append(timed(lambda: plain(frame)))
            times["b"].append(timed(lambda: hand_written(frame, experiment_id)))
            times["c"].append(timed(lambda: through_operator(snapshot_uri, attempt)))
        a, b, c = (statistics.median(times[k]) for k in "abc")
        print(f"\n{args.rows} rows x 20 features, RandomForest {ESTIMATOR_PARAMS}, {args.rounds} rounds (medians)")
        print(f"(a) plain sklearn                      {a:7.3f} s   rounds: {' '.join(f'{t:.3f}' for t in times['a'])}")
        print(f"(b) hand-written mlflow                {b:7.3f} s   rounds: {' '.join(f'{t:.3f}' for t in times['b'])}")
        print(f"(c) MLflowTrainOperator                {c:7.3f} s   rounds: {' '.join(f'{t:.3f}' for t in times['c'])}")
        print(f"c/b                                    {c / b:7.3f}     (target <= 1.15)")
        print(f"tracking overhead: b-a {b - a:.3f} s, c-a {c - a:.3f} s")


if __name__ == "__main__":
    main()
