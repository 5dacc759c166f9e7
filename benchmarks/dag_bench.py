"""Cost of the flagship DAG as Airflow sees it: the parse time of each DAG file, and a whole run of
the wine DAG through ``dag.test()`` against the same work written as a plain Python script.

Parse time is Airflow's own measure (``DagBag(file).dagbag_stats``: ``FileLoadStat.duration``), each
file in a fresh process so its imports are cold, as in the dag-processor; target 0.5 s per file.

The DAG is loaded from its file with ``DagBag`` and run by ``dag.test()`` (``run_conf`` rows and
trials, a fixed logical date) in a fresh AIRFLOW_HOME, ``airflow db migrate`` done beforehand and not
timed, on the embedded SQLite MLflow and Optuna stores. The script is what a user would write for
the same records, no more: the day's data (generator, seed, day) written as the DAG writes it, with a
content-addressed copy as its version (BLAKE3), kept in memory for the steps; the same study (TPE
seeded 42, the DAG's search space, 5-fold CV on the training part, SQLite storage), a nested MLflow
run per trial (params, metric) under a parent with the best params and the study's two plots; the
training run (params, the model with signature, input example, skops and pinned requirements as the
operator logs it, MLflow's default evaluation and a residuals plot); on both runs the data version
as an MLflow dataset, the installed packages and the code; ``mlflow.register_model`` with the
``champion`` alias, and ``pyfunc.load_model`` scoring the day's rows into Parquet, on a SQLite MLflow
store with local artifacts. What the DAG adds (Airflow's task machinery, the snapshot records, retry
bookkeeping, the run definition kept for ``reproduce``, the gate's scoring) is its overhead. Each
side runs in a fresh child process with fresh stores, alternating, and all runs must agree on the
champion's params and RMSE and on the number of MLflow runs. Prints medians per step and in total,
DAG/script (target < 1.3), child wall time and peak memory; and Airflow's own part: a DAG of the same
six tasks doing nothing, through ``dag.test()`` in a fresh child (its cold start included), and the
total less that. Imports that Airflow and the operators share are in both, so that figure is a
lower bound of what the operators add.

    python benchmarks/dag_bench.py [--rows 1599] [--trials 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import RESULT, measure_in_child

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "wine_quality_retrain.py"
DAG_ID = "wine_quality_retrain"
PARSE_TARGET_SECONDS = 0.5
RATIO_TARGET = 1.3
LOGICAL_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)
# The DAG's defaults (its params and the operators' seed) and model name.
ROWS, TRIALS, DATA_SEED, SEED, TEST_SIZE, CV_FOLDS = 1_599, 20, 7, 42, 0.2, 5
MODEL = "wine_quality"
METRIC = "root_mean_squared_error"
# Script steps and the DAG tasks doing the same work.
STEPS = {
    "data": ("generate_wines", "snapshot_wines"),
    "tune": ("tune_elasticnet",),
    "train": ("train_elasticnet",),
    "register": ("register_wine_quality",),
    "predict": ("score_wines",),
}


def parse_file(path: str) -> dict:
    """Airflow's parse time of one DAG file: the DagBag's FileLoadStat."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(path)
    (stat,) = bag.dagbag_stats
    return {"seconds": stat.duration.total_seconds(), "dags": stat.dag_num, "errors": list(bag.import_errors.values())}


#: The wine DAG's shape with tasks that do nothing: what ``dag.test()`` itself costs for six tasks.
NOOP_DAG = f"""
from datetime import datetime
from airflow.sdk import DAG, chain, task

@task
def nothing():
    pass

with DAG("noop_{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1)):
    chain(*(nothing.override(task_id=name)() for names in {list(STEPS.values())!r} for name in names))
"""


def run_noop_dag(home: Path) -> dict:
    """The no-op DAG through ``dag.test()``: Airflow's own cost of running six tasks in this way."""
    from airflow.dag_processing.dagbag import DagBag

    (home / "dags" / "noop.py").write_text(NOOP_DAG)
    dag = DagBag(str(home / "dags" / "noop.py")).dags[f"noop_{DAG_ID}"]
    started = time.perf_counter()
    dag_run = dag.test(logical_date=LOGICAL_DATE)
    if dag_run.state != "success":
        raise SystemExit(f"no-op DAG run {dag_run.state}")
    return {"seconds": time.perf_counter() - started}


def run_dag(home: Path, rows: int, trials: int) -> dict:
    """The DAG through ``dag.test()``: its wall time and each task's duration."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.session import create_session

    dag = DagBag(str(home / "dags" / DAG_FILE.name)).dags[DAG_ID]
    started = time.perf_counter()
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_conf={"rows": rows, "n_trials": trials})
    seconds = time.perf_counter() - started
    with create_session() as session:
        tasks = {ti.task_id: (ti.state, (ti.end_date - ti.start_date).total_seconds())
                 for ti in dag_run.get_task_instances(session=session)}
    if dag_run.state != "success":
        raise SystemExit(f"DAG run {dag_run.state}: {tasks}")
    steps = {step: sum(tasks[task][1] for task in task_ids) for step, task_ids in STEPS.items()}
    return {"seconds": seconds, "steps": steps, **champion(f"sqlite:///{home}/airflow_mlops/mlflow.db")}


def generate(home: Path, rows: int):
    """The day's wines (the DAG's generator, seed and day) written as its CSV, a content-addressed copy of
    the file as the data version, and the operators' train/test split."""
    import shutil

    from blake3 import blake3
    from sklearn.model_selection import train_test_split

    from airflow_mlops.datasets import dated_seed
    from airflow_mlops.datasets.wine import FEATURE_COLUMNS, TARGET, generate_wine_quality

    frame = generate_wine_quality(rows, seed=dated_seed(DATA_SEED, LOGICAL_DATE.date()))
    source = home / "data" / "wine_quality.csv"
    source.parent.mkdir()
    frame.to_csv(source, index=False)
    version = blake3(source.read_bytes()).hexdigest()
    (home / "versions").mkdir()
    shutil.copyfile(source, home / "versions" / version)
    return frame, version, train_test_split(frame[FEATURE_COLUMNS], frame[TARGET], test_size=TEST_SIZE,
                                            random_state=SEED)


def rmse(model, X, y) -> float:
    import numpy as np
    from sklearn.metrics import mean_squared_error

    return float(np.sqrt(mean_squared_error(y, model.predict(X))))


def log_inputs(frame, version: str) -> None:
    """On the active run: the data version as an MLflow dataset, the installed packages and this code."""
    from importlib.metadata import distributions

    import mlflow

    from airflow_mlops.datasets.wine import TARGET

    mlflow.log_input(mlflow.data.from_pandas(frame, source=f"versions/{version}", targets=TARGET,
                                             name=f"wine:{version}", digest=version[:32]), context="training")
    pins = sorted(f"{d.metadata['Name']}=={d.metadata['Version']}" for d in distributions())
    mlflow.log_text("\n".join(pins) + "\n", "environment/requirements.txt")
    mlflow.log_artifact(__file__, "code")


def tune(home: Path, frame, version: str, X_train, y_train, trials: int) -> dict:
    """The Optuna study, a nested MLflow run per trial, the best params and the study's plots on the parent."""
    import matplotlib

    matplotlib.use("Agg")
    import mlflow
    import optuna
    import optuna.visualization.matplotlib as plots
    from sklearn.linear_model import ElasticNet
    from sklearn.model_selection import KFold

    mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        MODEL, artifact_location=(home / "mlartifacts" / MODEL).as_uri()))
    folds = list(KFold(CV_FOLDS, shuffle=True, random_state=SEED).split(X_train))

    def objective(trial) -> float:
        params = {"alpha": trial.suggest_float("alpha", 1e-4, 1.0, log=True),
                  "l1_ratio": trial.suggest_float("l1_ratio", 0.0, 1.0)}
        scores = [rmse(ElasticNet(**params, random_state=SEED).fit(X_train.iloc[fit], y_train.iloc[fit]),
                       X_train.iloc[valid], y_train.iloc[valid]) for fit, valid in folds]
        value = sum(scores) / len(scores)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(params)
            mlflow.log_metric(METRIC, value)
        return value

    study = optuna.create_study(study_name=MODEL, storage=f"sqlite:///{home}/optuna.db", direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=SEED))
    with mlflow.start_run(run_name="tune"):
        log_inputs(frame, version)
        study.optimize(objective, n_trials=trials)
        mlflow.log_params({f"best.{name}": value for name, value in study.best_params.items()})
        mlflow.log_metric(f"best_{METRIC}", study.best_value)
        for name, plot in {"optimization_history": plots.plot_optimization_history,
                           "param_importances": plots.plot_param_importances}.items():
            mlflow.log_figure(plot(study).figure, f"plots/{name}.png")
    return study.best_params


def train(frame, version: str, best: dict, X_train, X_test, y_train, y_test) -> str:
    """ElasticNet with the best params as one run: params, the model as the operator logs it, MLflow's
    default evaluation (metrics and plots) on the test split and a residuals plot."""
    from importlib.metadata import version as installed

    import matplotlib.pyplot as plt
    import mlflow
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.linear_model import ElasticNet

    from airflow_mlops.datasets.wine import TARGET

    model = ElasticNet(**best, random_state=SEED).fit(X_train, y_train)
    example = X_train.head(5)
    with mlflow.start_run(run_name="train"):
        mlflow.log_params({**best, "seed": SEED, "target": TARGET, "test_size": TEST_SIZE, "estimator": "ElasticNet"})
        log_inputs(frame, version)
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(example, model.predict(example)), input_example=example,
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            pip_requirements=[f"{package}=={installed(package)}"
                              for package in ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")],
        )
        residuals = y_test.to_numpy() - model.predict(X_test)
        figure, (scatter, histogram) = plt.subplots(1, 2, figsize=(10, 4))
        scatter.scatter(model.predict(X_test), residuals, s=8)
        histogram.hist(residuals, bins=30)
        mlflow.log_figure(figure, "residuals.png")
        plt.close(figure)
        mlflow.models.evaluate(model=info.model_uri, data=X_test.assign(**{TARGET: y_test}), targets=TARGET,
                               model_type="regressor", evaluators=["default"],
                               evaluator_config={"default": {"log_model_explainability": False}})
    return info.model_uri


def register(model_uri: str) -> None:
    import mlflow

    registered = mlflow.register_model(model_uri, MODEL)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", registered.version)


def predict(home: Path, frame) -> None:
    import mlflow

    from airflow_mlops.datasets.wine import FEATURE_COLUMNS, KEY

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    frame[[KEY]].assign(predicted_quality=model.predict(frame[FEATURE_COLUMNS])).to_parquet(
        home / "predictions.parquet", index=False)


def run_script(home: Path, rows: int, trials: int) -> dict:
    """The same work as a plain script, step by step."""
    marks = [time.perf_counter()]

    def step(action):
        result = action()
        marks.append(time.perf_counter())
        return result

    frame, version, (X_train, X_test, y_train, y_test) = step(lambda: generate(home, rows))
    best = step(lambda: tune(home, frame, version, X_train, y_train, trials))
    model_uri = step(lambda: train(frame, version, best, X_train, X_test, y_train, y_test))
    step(lambda: register(model_uri))
    step(lambda: predict(home, frame))
    steps = {name: end - start for name, start, end in zip(STEPS, marks, marks[1:])}
    return {"seconds": marks[-1] - marks[0], "steps": steps, **champion(f"sqlite:///{home}/mlflow.db")}


def champion(tracking_uri: str) -> dict:
    """What both sides must agree on: the champion's params and RMSE, and how many runs were made."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(client.get_model_version_by_alias(MODEL, "champion").run_id)
    return {"alpha": float(run.data.params["alpha"]), "l1_ratio": float(run.data.params["l1_ratio"]),
            "rmse": run.data.metrics[METRIC], "runs": len(client.search_runs([run.info.experiment_id]))}


def worker(args: argparse.Namespace) -> None:
    os.dup2(sys.stdout.fileno(), sys.stderr.fileno())  # logs into measure_in_child's file, not the terminal
    os.environ["AIRFLOW_HOME"] = args.home
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(args.home) / "dags")
    if args.worker == "parse":
        answer = parse_file(args.file)
    elif args.worker == "dag":
        answer = run_dag(Path(args.home), args.rows, args.trials)
    elif args.worker == "noop":
        answer = run_noop_dag(Path(args.home))
    else:
        answer = run_script(Path(args.home), args.rows, args.trials)
    print(RESULT + json.dumps(answer))


def migrated_home(work: Path) -> Path:
    """An AIRFLOW_HOME with ``airflow db migrate`` done: its ``airflow.db`` seeds each run's home."""
    home = work / "migrated"
    home.mkdir()
    with open(home / "migrate.log", "w") as log:
        subprocess.run([Path(sys.executable).with_name("airflow"), "db", "migrate"], check=True, stdout=log,
                       stderr=subprocess.STDOUT, env={**os.environ, "AIRFLOW_HOME": str(home)})
    return home


def fresh_home(work: Path, name: str, migrated: Path | None) -> Path:
    """An empty home for the script; for the DAG, the migrated database and the DAG file alone in its DAG folder."""
    home = work / name
    (home / "dags").mkdir(parents=True)
    if migrated is not None:
        shutil.copy(migrated / "airflow.db", home / "airflow.db")
        shutil.copy(DAG_FILE, home / "dags" / DAG_FILE.name)
    return home


def median_of(results: list[dict], key) -> float:
    return statistics.median(key(result) for result in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=("parse", "dag", "script", "noop"), help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    with tempfile.TemporaryDirectory(prefix="dag-bench-") as tmp:
        work = Path(tmp)
        migrated = migrated_home(work)

        print(f"Parse time (DagBag FileLoadStat.duration, fresh process each), median of {args.rounds}, "
              f"target {PARSE_TARGET_SECONDS} s per file")
        for path in sorted((REPO / "dags").glob("*.py")):
            parsed = [measure_in_child(__file__, ["parse", "--home", str(migrated), "--file", str(path)])
                      for _ in range(args.rounds)]
            if any(result["errors"] or not result["dags"] for result in parsed):
                raise SystemExit(f"{path.name} does not parse: {parsed[0]['errors']}")
            seconds = median_of(parsed, lambda result: result["seconds"])
            print(f"  {path.name:<28}{seconds:7.3f} s  {'PASS' if seconds < PARSE_TARGET_SECONDS else 'FAIL'}   "
                  "rounds: " + " ".join(f"{result['seconds']:.3f}" for result in parsed))

        results: dict[str, list[dict]] = {"dag": [], "script": []}
        for round_number in range(args.rounds):
            for side in ("dag", "script") if round_number % 2 == 0 else ("script", "dag"):
                home = fresh_home(work, f"{side}-{round_number}", migrated if side == "dag" else None)
                started = time.perf_counter()
                result = measure_in_child(__file__, [side, "--home", str(home), "--rows", str(args.rows),
                                                     "--trials", str(args.trials)])
                results[side].append({**result, "process": time.perf_counter() - started})
        noop = [measure_in_child(__file__, ["noop", "--home", str(fresh_home(work, f"noop-{n}", migrated))])
                for n in range(args.rounds)]
        dag = results["dag"][0]
        for other in results["dag"] + results["script"]:
            same = all(math.isclose(dag[key], other[key], rel_tol=1e-9) for key in ("alpha", "l1_ratio", "rmse"))
            if not same or dag["runs"] != other["runs"]:
                raise SystemExit(f"the runs disagree on the champion: {dag} vs {other}")

        def medians(key) -> tuple[float, float]:
            return median_of(results["dag"], key), median_of(results["script"], key)

        print(f"\n{DAG_ID}: {args.rows} rows, {args.trials} trials, logical date {LOGICAL_DATE:%Y-%m-%d}; "
              f"medians of {args.rounds} rounds, each side in a fresh child process and fresh stores")
        print(f"champion on both: alpha {dag['alpha']:.6g}, l1_ratio {dag['l1_ratio']:.6g}, RMSE {dag['rmse']:.4f}, "
              f"{dag['runs']} MLflow runs")
        print(f"  {'':40}{'dag.test()':>10}  {'script':>8}  {'ratio':>6}")
        for name, tasks in STEPS.items():
            d, s = medians(lambda result: result["steps"][name])
            print(f"  {name + ' (' + ', '.join(tasks) + ')':<40}{d:8.2f} s  {s:6.2f} s  {d / s:6.2f}")
        outside = median_of(results["dag"], lambda result: result["seconds"] - sum(result["steps"].values()))
        print(f"  {'outside tasks (dag.test loop, sync)':<40}{outside:8.2f} s  {'-':>8}")
        d, s = medians(lambda result: result["seconds"])
        print(f"  {'total (timed in the child)':<40}{d:8.2f} s  {s:6.2f} s  {d / s:6.2f}   "
              f"(target < {RATIO_TARGET}: {'PASS' if d / s < RATIO_TARGET else 'FAIL'})")
        floor = median_of(noop, lambda result: result["seconds"])
        d, s = medians(lambda result: result["seconds"])
        print(f"  {'the same six tasks as no-ops (Airflow)':<40}{floor:8.2f} s  {'-':>8}")
        print(f"  {'total less the no-op run':<40}{d - floor:8.2f} s  {s:6.2f} s  {(d - floor) / s:6.2f}   "
              "(what airflow-mlops' operators add over the script)")
        d, s = medians(lambda result: result["process"])
        print(f"  {'child process, start to exit':<40}{d:8.2f} s  {s:6.2f} s  {d / s:6.2f}")
        d, s = medians(lambda result: result["peak_mb"])
        print(f"  {'peak memory (RSS)':<40}{d:7.0f} MB  {s:4.0f} MB  {d / s:6.2f}")
        for side in results:
            print(f"  {side} rounds (s):", " ".join(f"{result['seconds']:.2f}" for result in results[side]))
        print("DAG steps are Airflow's task durations (start to end date); the first task's includes the start of "
              "dag.test()'s in-process Execution API.")


if __name__ == "__main__":
    main()
