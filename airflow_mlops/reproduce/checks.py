"""What a reproduction checks before it re-runs anything: intact input data, the same code, the environment."""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Mapping
from pathlib import Path

from airflow_mlops.config import mlops_home, restored_budget_bytes
from airflow_mlops.errors import MlopsError, SnapshotError
from airflow_mlops.snapshots import SnapshotStore, parse_snapshot_ref
from airflow_mlops.tracking.environment import installed_requirements
from airflow_mlops.tracking.tags import CODE_FILE_TAGS, PYTHON_VERSION_TAG

log = logging.getLogger(__name__)

#: Opens the snapshot store at a URI (a local directory, or ``s3://`` through whatever client the caller has).
OpenStore = Callable[[str], SnapshotStore]


class CodeDriftError(MlopsError):
    """The code present differs from the code the record names, and drift was not allowed."""


def restore_verified(open_store: OpenStore, snapshot_uri: str) -> tuple[str, Path]:
    """(full id, local read-only folder) of a recorded snapshot, once every stored object of it re-hashes right.

    The folder of restored snapshots may hold an intact copy made before an object was damaged: the
    store itself is verified first, so a reproduction never runs on data the store can no longer vouch for.
    """
    store_uri, snapshot_id = parse_snapshot_ref(snapshot_uri)
    store = open_store(store_uri)
    full_id = store.resolve(snapshot_id)
    problems = store.verify(full_id)
    if problems:
        raise SnapshotError(f"snapshot {full_id} fails verification, refusing to reproduce: "
                            + "; ".join(problem.describe() for problem in problems))
    return full_id, store.materialize(full_id, mlops_home() / "restored", budget_bytes=restored_budget_bytes())


def source_difference(role: str, recorded: tuple[str | None, str | None], present: tuple[str | None, str | None]) -> str | None:
    """How one recorded source file (path, digest) differs from the one present now, or None if it does not."""
    (path, digest), (present_path, present_digest) = recorded, present
    if digest is None:
        return None
    if present_digest is None:
        return f"{role} {path}: missing"
    if present_path != path:
        return f"{role} {path}: now {present_path}" + (", changed" if present_digest != digest else "")
    return f"{role} {path}: changed" if present_digest != digest else None


def code_differences(recorded: Mapping[str, str], present: Mapping[str, str]) -> list[str]:
    """The source files a run's tags record (DAG file, training module) that differ from those ``present`` tags."""
    differences = []
    for role, (path_tag, digest_tag) in CODE_FILE_TAGS.items():
        difference = source_difference(role, (recorded.get(path_tag), recorded.get(digest_tag)),
                                       (present.get(path_tag), present.get(digest_tag)))
        if difference:
            differences.append(difference)
    return differences


def check_code(differences: list[str], what: str, allow_code_drift: bool) -> list[str]:
    """Refuse code that differs from the record unless drift is allowed; then warn and return the differences."""
    if differences and not allow_code_drift:
        raise CodeDriftError(f"the code of {what} changed since it ran: {'; '.join(differences)}; "
                             "pass --allow-code-drift to reproduce anyway")
    for difference in differences:
        log.warning("reproducing %s with changed code: %s", what, difference)
    return differences


def _pins(requirements: str) -> dict[str, str]:
    """``{lowercased name: version}`` of ``name==version`` lines."""
    pins = {}
    for line in requirements.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[name.lower()] = version
    return pins


def environment_differences(recorded_requirements: str, recorded_tags: Mapping[str, str]) -> list[str]:
    """Python and package versions that differ between the record and this process, one line each."""
    differences = []
    recorded_python = recorded_tags.get(PYTHON_VERSION_TAG)
    if recorded_python and recorded_python != platform.python_version():
        differences.append(f"python: {recorded_python} recorded, {platform.python_version()} now")
    recorded, present = _pins(recorded_requirements), _pins(installed_requirements())
    for name in sorted(set(recorded) | set(present)):
        if recorded.get(name) != present.get(name):
            differences.append(f"{name}: {recorded.get(name, 'not installed')} recorded, "
                               f"{present.get(name, 'not installed')} now")
    return differences
