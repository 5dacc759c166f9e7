"""Spark ETL against pandas: the per-customer fraud aggregation at several sizes, same data, same features.

For each size, PaySim-style transactions are generated and snapshotted, then aggregated (a) through
SparkETLOperator on local[2] (restore, JVM start, aggregation, reproducible Parquet, snapshot: what a
task pays) and (b) with a pandas groupby (the baseline: read, aggregate, write Parquet). Each runs in
a child process of its own, so its memory peak (RSS of the process and its children, the JVM
included, sampled every 50 ms) is its alone. Prints seconds, rows/s, peak memory and the ratio.

    python benchmarks/etl_bench.py [--sizes 1000000 4000000 8000000] [--format parquet|csv] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import RESULT, measure_in_child, run_task, timed



def pandas_customer_features(frame):
    """The same features as ``airflow_mlops.etl.fraud.customer_features``, with pandas."""
    import pandas as pd

    from airflow_mlops.datasets.paysim import TYPES

    frame = frame.assign(
        orig_delta=frame["newbalanceOrig"] - frame["oldbalanceOrg"],
        dest_delta=frame["newbalanceDest"] - frame["oldbalanceDest"],
    )
    grouped = frame.groupby("nameOrig", sort=True)
    features = grouped.agg(
        n_transactions=("amount", "size"), total_amount=("amount", "sum"), max_amount=("amount", "max"),
        orig_balance_delta=("orig_delta", "sum"), dest_balance_delta=("dest_delta", "sum"), isFraud=("isFraud", "max"),
    )
    features["mean_amount"] = features["total_amount"] / features["n_transactions"]
    by_type = frame.pivot_table(index="nameOrig", columns="type", values="amount", aggfunc=["size", "sum"], fill_value=0)
    for kind in TYPES:
        count = by_type[("size", kind)] if ("size", kind) in by_type else 0
        total = by_type[("sum", kind)] if ("sum", kind) in by_type else 0.0
        features[f"n_{kind.lower()}"] = count
        features[f"amount_{kind.lower()}"] = total
        features[f"mean_amount_{kind.lower()}"] = (pd.Series(total, index=features.index) / count).fillna(0.0)
    return features.reset_index()


def run_pandas(source: Path, output: Path) -> dict:
    import pandas as pd

    from airflow_mlops.formats import data_files

    files, data_format = data_files(source)
    frame = pd.read_parquet(files[0]) if data_format == "parquet" else pd.read_csv(files[0])
    features = pandas_customer_features(frame)
    features.to_parquet(output / "features.parquet", index=False)
    return {"customers": len(features), "total_amount": float(features["total_amount"].sum())}


def spark_conf(driver_memory: str) -> dict[str, str]:
    return {"spark.master": "local[2]", "spark.driver.memory": driver_memory}


def run_spark(raw_uri: str, store: str, driver_memory: str) -> dict:
    import pandas as pd

    from airflow_mlops.operators import SparkETLOperator
    from airflow_mlops.snapshots import SnapshotStore

    result = run_task(
        SparkETLOperator, dag_id="etl_bench", run_id=f"bench__{time.time_ns()}", task_id="customer_features",
        inputs={"transactions": raw_uri}, transform="airflow_mlops.etl.fraud:customer_features", store=store,
        spark_conn_id=None, conf=spark_conf(driver_memory),
    )["result"]
    snapshot = SnapshotStore.open(store)
    folder = snapshot.materialize(result["snapshot_id"], Path(store).parent / "restored")
    features = pd.read_parquet(folder)
    return {"customers": len(features), "total_amount": float(features["total_amount"].sum())}


def worker(args: argparse.Namespace) -> None:
    answer: dict = {}

    def work() -> None:
        if args.worker == "pandas":
            answer.update(run_pandas(Path(args.source), Path(args.output)))
        elif args.worker == "spark":
            answer.update(run_spark(args.source, args.store, args.driver_memory))
        else:
            from airflow_mlops.hooks.spark import SparkHook

            with SparkHook(None, spark_conf(args.driver_memory)).session():
                pass

    answer["seconds"] = timed(work)
    print(RESULT + json.dumps(answer))


def prepare(rows: int, root: Path, data_format: str) -> tuple[Path, str]:
    """Transactions in ``root/raw`` (parquet or csv) and their snapshot URI in ``root/store``."""
    from airflow_mlops.datasets.paysim import generate_paysim
    from airflow_mlops.snapshots import SnapshotStore

    raw = root / "raw"
    raw.mkdir(parents=True)
    frame = generate_paysim(rows, seed=1)
    if data_format == "parquet":
        frame.to_parquet(raw / "transactions.parquet", index=False)
    else:
        frame.to_csv(raw / "transactions.csv", index=False)
    return raw, SnapshotStore.open(str(root / "store")).snapshot(raw).uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 8_000_000])
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory (local mode: all of Spark's heap)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--worker", choices=("pandas", "spark", "startup"), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="etl_bench_"))
    os.environ["AIRFLOW_HOME"] = str(workdir / "airflow")
    print(f"{'rows':>10} {'engine':>8} {'seconds':>8} {'rows/s':>11} {'peak MB':>8}   spark/pandas time  memory")
    for rows in args.sizes:
        root = workdir / f"rows_{rows}"
        raw, raw_uri = prepare(rows, root, args.format)
        (root / "pandas_out").mkdir()
        pandas = measure_in_child(__file__, ["pandas", "--source", str(raw), "--output", str(root / "pandas_out")])
        spark = measure_in_child(__file__, ["spark", "--source", raw_uri, "--store", str(root / "out_store"), "--driver-memory", args.driver_memory])
        if spark["customers"] != pandas["customers"] or abs(spark["total_amount"] - pandas["total_amount"]) > 0.01 * rows:
            raise SystemExit(f"engines disagree at {rows} rows: spark {spark} pandas {pandas}")
        for name, result in (("pandas", pandas), ("spark", spark)):
            print(f"{rows:>10,} {name:>8} {result['seconds']:>8.1f} {rows / result['seconds']:>11,.0f} {result['peak_mb']:>8,.0f}", end="")
            print(f"   {spark['seconds'] / pandas['seconds']:>16.2f}x  {spark['peak_mb'] / pandas['peak_mb']:.2f}x" if name == "spark" else "")
    startup = measure_in_child(__file__, ["startup", "--driver-memory", args.driver_memory])
    print(f"Spark session start and stop alone (in every spark row above): {startup['seconds']:.1f} s, "
          f"{startup['peak_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
