"""``airflow-mlops``: the core verbs from a shell, without a running Airflow.

Exit codes: 0 success, 1 verification found damage or a reproduction differs, 2 bad input or a refusal
(one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_mlops.config import default_snapshot_store
from airflow_mlops.errors import MlopsError
from airflow_mlops.snapshots import SnapshotStore

if TYPE_CHECKING:
    from airflow_mlops.retention import KeepRules


def _open_store(args: argparse.Namespace) -> SnapshotStore:
    """A local store directly; an S3 store through the Airflow AWS connection (loads Airflow)."""
    if args.store.startswith("s3://"):
        from airflow.sdk.log import configure_logging

        from airflow_mlops.hooks.snapshot_store import SnapshotStoreHook

        configure_logging(output=sys.stderr)  # stdout carries results only: ids, tables, JSON
        return SnapshotStoreHook(args.store, args.aws_conn_id).get_conn()
    return SnapshotStore.open(args.store)


def _cmd_snapshot(args: argparse.Namespace) -> int:
    record = _open_store(args).snapshot(args.path)
    print(f"{record.files} files, {record.bytes} bytes from {record.source} in {record.store}")
    print(record.snapshot_id)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    store = _open_store(args)
    entries = store.restore(args.snapshot_id, args.dest, force=args.force)
    print(f"restored {len(entries)} files of {store.resolve(args.snapshot_id)} to {args.dest}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    problems = _open_store(args).verify(args.snapshot_id)
    for problem in problems:
        print(problem.describe(), file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} bad objects", file=sys.stderr)
        return 1
    print("verify: all objects intact")
    return 0


def _cmd_log(args: argparse.Namespace) -> int:
    records = _open_store(args).records()
    if args.format == "json":
        print(json.dumps([record.to_dict() for record in records], indent=2))
        return 0
    for record in records:
        airflow = record.airflow
        taken_by = f"  {airflow['dag_id']}/{airflow['run_id']}/{airflow['task_id']}" if airflow else ""
        print(
            f"{record.snapshot_id[:12]}  {record.created[:19].replace('T', ' ')}  "
            f"{record.files:>7} files  {record.bytes:>13,} bytes  {record.source}{taken_by}"
        )
    return 0


def _cmd_lineage(args: argparse.Namespace) -> int:
    from airflow_mlops.lineage.walk import LineageWalker
    from airflow_mlops.lineage.render import render

    lineage = LineageWalker(_open_store(args), _registry_client(args)).walk(args.ref)
    print(render(lineage, args.format))
    return 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    store = _open_store(args)
    print(f"indexed {store.reindex()} snapshot records in {store.uri}")
    return 0


def _cmd_forget(args: argparse.Namespace) -> int:
    from airflow_mlops.retention import KeepRules

    rules = KeepRules.parse(args.keep_last, args.keep_daily, args.keep_weekly)  # before anything is opened
    return _apply_retention(args, rules, collect_garbage=False)


def _cmd_gc(args: argparse.Namespace) -> int:
    return _apply_retention(args, None, collect_garbage=True, grace_seconds=args.grace_seconds)


def _apply_retention(args: argparse.Namespace, rules: KeepRules | None, *, collect_garbage: bool,
                     grace_seconds: float | None = None) -> int:
    """Retention's core on ``--store``, with the registry of ``--tracking-uri``; prints its report."""
    from contextlib import nullcontext

    from airflow_mlops.retention import apply_retention

    report = apply_retention(_open_store(args), lambda: nullcontext(_registry_client(args)), rules,
                             collect_garbage=collect_garbage, grace_seconds=grace_seconds, dry_run=args.dry_run)
    print(report.render())
    return 0


def _registry_client(args: argparse.Namespace):
    """An MlflowClient on ``--tracking-uri``, else MLFLOW_TRACKING_URI, else the embedded store.

    A server's credentials come from MLflow's own variables (MLFLOW_TRACKING_USERNAME/PASSWORD or _TOKEN).
    """
    import os

    import mlflow

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from airflow_mlops.embedded import embedded_tracking_store

        uri = embedded_tracking_store()
    return mlflow.MlflowClient(uri, uri)


def _print_entry(entry: dict) -> None:
    moved = f"{entry['alias']}: {entry.get('from_version') or '-'} -> {entry.get('to_version') or '-'}"
    print(f"{entry['seq']:>4}  {entry['at'][:19].replace('T', ' ')}  {entry['action']:<8}  {moved:<28}  {entry['by']}  {entry['reason']}")


def _cmd_history(args: argparse.Namespace) -> int:
    from airflow_mlops.registry.history import history

    entries = history(_registry_client(args), args.name)
    if args.format == "json":
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        _print_entry(entry)
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from airflow_mlops.registry.promotion import promote

    _print_entry(promote(_registry_client(args), args.name, args.version, args.reason, lock_url=args.lock_url))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from airflow_mlops.registry.promotion import rollback

    _print_entry(rollback(_registry_client(args), args.name, args.reason, lock_url=args.lock_url))
    return 0


def _local_spark():
    """Spark on local[*] in this process, to re-run an ETL job (the Spark hook loads Airflow)."""
    from airflow.sdk.log import configure_logging

    from airflow_mlops.hooks.spark import SparkHook

    configure_logging(output=sys.stderr)  # stdout carries the report only
    return SparkHook(None, app_name="airflow-mlops.reproduce")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import mlflow

    from airflow_mlops.reproduce import reproduce

    client = _registry_client(args)
    mlflow.set_tracking_uri(client.tracking_uri)  # the new run is logged through MLflow's fluent API
    report = reproduce(
        args.ref, client=client, default_store=args.store, tolerance=args.tolerance,
        allow_code_drift=args.allow_code_drift, spark_runner=_local_spark,
        open_store=lambda uri: _open_store(argparse.Namespace(store=uri, aws_conn_id=args.aws_conn_id)),
    )
    print(report.render())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-mlops", description=__doc__.splitlines()[0])
    store_options = argparse.ArgumentParser(add_help=False)
    store_options.add_argument(
        "--store",
        default=default_snapshot_store(),
        help="local directory or s3://bucket/prefix (default: %(default)s)",
    )
    store_options.add_argument(
        "--aws-conn-id", default="aws_default", help="Airflow AWS connection for s3:// stores"
    )
    tracking_options = argparse.ArgumentParser(add_help=False)
    tracking_options.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the embedded store)"
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    snapshot = verbs.add_parser("snapshot", parents=[store_options], help="record a file or directory")
    snapshot.add_argument("path")
    snapshot.set_defaults(run=_cmd_snapshot)

    restore = verbs.add_parser("restore", parents=[store_options], help="write a snapshot's files")
    restore.add_argument("snapshot_id")
    restore.add_argument("dest")
    restore.add_argument("--force", action="store_true", help="write into a non-empty DEST (listed files are overwritten)")
    restore.set_defaults(run=_cmd_restore)

    verify = verbs.add_parser("verify", parents=[store_options], help="re-hash stored objects")
    verify.add_argument("snapshot_id", nargs="?")
    verify.set_defaults(run=_cmd_verify)

    log = verbs.add_parser("log", parents=[store_options], help="list snapshots, newest first")
    log.add_argument("--format", choices=("table", "json"), default="table")
    log.set_defaults(run=_cmd_log)

    lineage = verbs.add_parser("lineage", parents=[store_options, tracking_options], help="where a snapshot, run or model version came from and went")
    lineage.add_argument("ref", help="snapshot id or unique prefix, MLflow run id, models:/NAME/VERSION or models:/NAME@ALIAS")
    lineage.add_argument("--format", choices=("tree", "json", "dot"), default="tree")
    lineage.set_defaults(run=_cmd_lineage)

    reindex = verbs.add_parser("reindex", parents=[store_options], help="rebuild a snapshot store's lineage index")
    reindex.set_defaults(run=_cmd_reindex)

    forget = verbs.add_parser(
        "forget", parents=[store_options, tracking_options],
        help="mark snapshots no keep rule keeps as forgotten (never one a registered model version needs)",
    )
    for rule, what in (("last", "the N newest snapshots"), ("daily", "the newest snapshot of each of the N newest days"),
                       ("weekly", "the newest snapshot of each of the N newest ISO weeks")):
        forget.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N",
                            help=f"keep {what} of each dag_id/task_id (else source)")
    forget.add_argument("--dry-run", action="store_true", help="print each decision and its reason, change nothing")
    forget.set_defaults(run=_cmd_forget)

    gc = verbs.add_parser(
        "gc", parents=[store_options, tracking_options],
        help="delete forgotten snapshots and unused objects (a snapshot a registered model version needs is kept)",
    )
    gc.add_argument("--grace-seconds", type=float, help="leave objects younger than this (default: the store's)")
    gc.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    gc.set_defaults(run=_cmd_gc)

    registry_options = argparse.ArgumentParser(add_help=False, parents=[tracking_options])
    registry_options.add_argument("name", help="registered model name")
    lock_options = argparse.ArgumentParser(add_help=False)
    lock_options.add_argument(
        "--lock-url", help="SQLAlchemy URL of the PostgreSQL database for the promotion lock (default: a file lock on this machine)"
    )

    history = verbs.add_parser("history", parents=[registry_options], help="a registered model's alias moves, oldest first")
    history.add_argument("--format", choices=("table", "json"), default="table")
    history.set_defaults(run=_cmd_history)

    promote = verbs.add_parser("promote", parents=[registry_options, lock_options], help="make a version the champion")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True)
    promote.set_defaults(run=_cmd_promote)

    rollback = verbs.add_parser("rollback", parents=[registry_options, lock_options], help="champion back to previous-champion")
    rollback.add_argument("--reason", required=True)
    rollback.set_defaults(run=_cmd_rollback)

    reproduce = verbs.add_parser(
        "reproduce", parents=[store_options, tracking_options],
        help="re-create a training run, tuning trial or ETL snapshot from its record and compare (exit 1: differs)",
    )
    reproduce.add_argument("ref", help="MLflow run id (training run or trial), or snapshot id (--store) or <store>#<id>")
    reproduce.add_argument("--tolerance", type=float, default=0.0, help="largest absolute metric difference that matches (default: exact)")
    reproduce.add_argument("--allow-code-drift", action="store_true", help="reproduce even if the recorded code files changed (they are named)")
    reproduce.set_defaults(run=_cmd_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MlopsError as error:
        print(f"airflow-mlops: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an unwritable store, a full disk: one line, not a traceback
        print(f"airflow-mlops: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except Exception as error:  # an MLflow error (unknown model, version or server): one line too
        from mlflow.exceptions import MlflowException

        if not isinstance(error, MlflowException):
            raise
        print(f"airflow-mlops: error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
