"""What produced a run besides data and params: the code version and the runtime environment."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from airflow_mlops.snapshots.hashing import digest_bytes
from airflow_mlops.tracking.tags import (
    CODE_FILE_TAGS,
    CPU_COUNT_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    PLATFORM_TAG,
    PYTHON_VERSION_TAG,
    SOURCE_NAME_TAG,
)


def environment_tags() -> dict[str, str]:
    """Python version, platform and CPU count of this process."""
    return {
        PYTHON_VERSION_TAG: platform.python_version(),
        PLATFORM_TAG: platform.platform(),
        CPU_COUNT_TAG: str(os.cpu_count()),
    }


@cache
def installed_requirements() -> str:
    """The installed package set as pinned requirements (``name==version`` lines, sorted).

    Read once per process: it reads every installed package's metadata, and a task's packages do
    not change while it runs.
    """
    pins = {}
    for dist in importlib.metadata.distributions():
        metadata = dist.metadata  # parsed on every access: once per package, not once per field
        if name := metadata["Name"]:
            pins[name.lower()] = f"{name}=={metadata['Version']}"
    return "\n".join(pins[name] for name in sorted(pins)) + "\n"


def pinned(*packages: str) -> list[str]:
    """``name==installed version`` for each package that is installed (a model's requirements)."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


@dataclass
class CodeVersion:
    """Git state of the folder holding the DAG, and digests of the source files that define the run."""

    tags: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)  # artifact name -> file


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_version(dag_file: str | None, module_file: str | None) -> CodeVersion:
    """Commit and dirtiness of the DAG folder's git checkout, plus digests of the DAG and module files."""
    version = CodeVersion()
    if dag_file and Path(dag_file).is_file():
        dag_path = Path(dag_file)
        commit = _git(dag_path.parent, "rev-parse", "HEAD")
        if commit:
            status = _git(dag_path.parent, "status", "--porcelain")
            version.tags[GIT_COMMIT_TAG] = commit
            version.tags[GIT_DIRTY_TAG] = str(bool(status)).lower()
        path_tag, digest_tag = CODE_FILE_TAGS["dag file"]
        version.tags[path_tag] = str(dag_path)
        version.tags[SOURCE_NAME_TAG] = str(dag_path)  # else MLflow names the airflow executable
        version.tags[digest_tag] = digest_bytes(dag_path.read_bytes())
        version.sources[f"dag/{dag_path.name}"] = dag_path
    if module_file and Path(module_file).is_file() and module_file != dag_file:
        module_path = Path(module_file)
        path_tag, digest_tag = CODE_FILE_TAGS["train module"]
        version.tags[path_tag] = str(module_path)
        version.tags[digest_tag] = digest_bytes(module_path.read_bytes())
        version.sources[f"train_module/{module_path.name}"] = module_path
    return version
