"""``airflow-mlops``: the core verbs from a shell, without a running Airflow.

Exit codes: 0 success, 1 verification found damage, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from airflow_mlops.config import default_snapshot_store
from airflow_mlops.errors import MlopsError
from airflow_mlops.snapshots import SnapshotStore


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


if __name__ == "__main__":
    sys.exit(main())
