"""Batch prediction through BatchPredictOperator (pandas and Spark) against ``model.predict`` on a pandas frame.

A logistic regression is registered on the embedded MLflow store (``models:/bench-scorer@champion``)
and scores a Parquet snapshot of ``--rows`` rows three ways, each in a child process of its own so
its memory peak (RSS of the process and its children, the JVM included, sampled every 50 ms) is its
alone: (a) ``direct``: read the Parquet file, ``model.predict`` (the baseline); (b) the operator on
pandas (restore, alias resolution, signature check, sorted Parquet, snapshot); (c) the operator on
Spark ``local[2]`` through ``mlflow.pyfunc.spark_udf``. Prints seconds, rows/s, peak memory and the
ratios to the baseline.

    python benchmarks/predict_bench.py [--rows 1000000 10000000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import RESULT, measure_in_child, run_task, timed

MODEL = "bench-scorer"
FEATURES = [f"f{i}" for i in range(8)]


def register_model() -> None:
    """Train a small classifier and register it as ``bench-scorer``, aliased ``champion``, on the embedded store."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from airflow_mlops.embedded import embedded_tracking_store

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(5000, len(FEATURES))), columns=FEATURES)
    y = (X.sum(axis=1) + rng.normal(size=len(X)) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    mlflow.set_tracking_uri(embedded_tracking_store())
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)))
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, info.model_uri, run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", str(version.version))


def prepare(rows: int, root: Path) -> tuple[Path, str]:
    """``rows`` feature rows with an ``id`` key as Parquet in ``root/data``, and their snapshot URI."""
    import numpy as np
    import pandas as pd

    from airflow_mlops.snapshots import SnapshotStore

    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    frame.insert(0, "id", rng.permutation(rows).astype("int64"))
    frame.to_parquet(data / "rows.parquet", index=False)
    return data, SnapshotStore.open(str(root / "store")).snapshot(data).uri


def run_direct(source: Path) -> dict:
    """The baseline: the model from the registry, ``predict`` on the whole frame in memory."""
    import mlflow
    import pandas as pd

    from airflow_mlops.embedded import embedded_tracking_store

    mlflow.set_tracking_uri(embedded_tracking_store())
    model = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")
    frame = pd.read_parquet(source / "rows.parquet")
    predictions = model.predict(frame[FEATURES])
    return {"rows": len(frame), "positives": int(predictions.sum())}


def run_operator(source_uri: str, store: str, spark: bool) -> dict:
    """The operator as one task instance, on pandas or (threshold 0) on Spark local[2]."""
    import pandas as pd

    from airflow_mlops.operators import BatchPredictOperator
    from airflow_mlops.snapshots import SnapshotStore

    engine = {"spark_threshold_bytes": 0, "conf": {"spark.master": "local[2]", "spark.driver.memory": "4g"}} if spark else {}
    result = run_task(BatchPredictOperator, dag_id="predict_bench", run_id=f"bench__{time.time_ns()}", task_id="predict",
                      model=f"models:/{MODEL}@champion", input_snapshot=source_uri, key_columns=["id"], store=store,
                      **engine)["result"]
    folder = SnapshotStore.open(store).materialize(result["snapshot_id"], Path(store).parent / f"restored-{spark}")
    return {"rows": result["rows"], "positives": int(pd.read_parquet(folder)["prediction"].sum()),
            "snapshot_id": result["snapshot_id"]}


def worker(args: argparse.Namespace) -> None:
    answer: dict = {}

    def work() -> None:
        if args.worker == "direct":
            answer.update(run_direct(Path(args.source)))
        else:
            answer.update(run_operator(args.source, args.store, spark=args.worker == "spark"))

    answer["seconds"] = timed(work)
    print(RESULT + json.dumps(answer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--worker", choices=("direct", "pandas", "spark"), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="predict_bench_"))
    os.environ["AIRFLOW_HOME"] = str(workdir / "airflow")
    register_model()
    print(f"{'rows':>11} {'path':>8} {'seconds':>8} {'rows/s':>11} {'peak MB':>8}   time/direct  memory/direct")
    for rows in args.rows:
        root = workdir / f"rows_{rows}"
        data, uri = prepare(rows, root)
        direct = measure_in_child(__file__, ["direct", "--source", str(data)])
        results = {"direct": direct}
        for name in ("pandas", "spark"):
            results[name] = measure_in_child(__file__, [name, "--source", uri, "--store", str(root / f"out_{name}")])
            if (results[name]["rows"], results[name]["positives"]) != (direct["rows"], direct["positives"]):
                raise SystemExit(f"{name} disagrees with model.predict at {rows} rows: {results[name]} vs {direct}")
        if results["pandas"]["snapshot_id"] != results["spark"]["snapshot_id"]:
            raise SystemExit(f"pandas and Spark recorded different snapshots at {rows} rows")
        for name, result in results.items():
            print(f"{rows:>11,} {name:>8} {result['seconds']:>8.1f} {rows / result['seconds']:>11,.0f} {result['peak_mb']:>8,.0f}"
                  f"   {result['seconds'] / direct['seconds']:>10.2f}x  {result['peak_mb'] / direct['peak_mb']:>12.2f}x")


if __name__ == "__main__":
    main()
