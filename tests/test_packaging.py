"""The distribution as users install it: valid provider metadata, the Spark extra, and a wheel that works on its own."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_mlops.errors import MlopsError
from tests.conftest import REPO, require_service


# --- provider metadata ------------------------------------------------------------------------


@pytest.mark.floor
def test_provider_info_validates_against_the_installed_airflows_schema_and_every_class_it_names_imports():
    import airflow
    import jsonschema

    from airflow_mlops.get_provider_info import get_provider_info

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)

    modules = [module for section in ("operators", "hooks") for entry in info.get(section, []) for module in entry["python-modules"]]
    classes = [entry["hook-class-name"] for entry in info.get("connection-types", [])] + list(info.get("extra-links", []))
    assert modules and classes
    for module in modules:
        importlib.import_module(module)
    for path in classes:
        module, _, name = path.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type), path


@pytest.mark.floor
def test_the_provider_entry_point_of_the_installed_distribution_gives_the_provider_info():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.dist and e.dist.name == "airflow-mlops"]
    assert entry.load()()["package-name"] == "airflow-mlops"


# --- the spark extra --------------------------------------------------------------------------


@pytest.mark.floor
@pytest.mark.parametrize("missing", ["pyspark", "airflow.providers.apache.spark"])
def test_a_spark_feature_without_the_spark_extra_names_the_extra(missing, monkeypatch):
    """Each part of the extra missing (sys.modules[name] = None makes it unimportable) gives a one-line error naming it."""
    from airflow_mlops.hooks.spark import SparkHook

    monkeypatch.setitem(sys.modules, missing, None)
    hook = SparkHook(spark_conn_id=None)
    with pytest.raises(MlopsError, match=r"pip install 'airflow-mlops\[spark\]'") as error:
        with hook.session():
            pass
    assert f"(not installed: {missing})" in str(error.value)
    with pytest.raises(MlopsError, match=r"'spark' extra"):
        hook.submit("app.py", [])


@pytest.mark.floor
def test_the_spark_extra_check_passes_when_it_is_installed():
    from airflow_mlops.utils.extras import require_extra

    require_extra("spark", "Spark ETL")  # the environments under test install the extra


# --- the wheel on its own ---------------------------------------------------------------------


def _tool(name: str) -> str:
    """A build tool of the test extra: skipped locally without it, a failure in CI."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if name in ("build", "twine"):
        found = importlib.util.find_spec(name) is not None
        require_service(found, f"{name} is not installed (pip install -c requirements.lock -e '.[test]')")
        return name
    require_service(path is not None, f"{name} is not installed (pip install -c requirements.lock -e '.[test]')")
    return path


def _run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """sdist and wheel built from this checkout (python -m build), and a fresh venv with only the wheel installed."""
    _tool("build"), _tool("twine")
    uv = _tool("uv")
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    _run(sys.executable, "-m", "build", "--installer", "uv", "--sdist", "--wheel", "--outdir", dist, REPO)
    venv = work / "venv"
    # The base interpreter, not this venv's: the new venv sees nothing installed here.
    _run(uv, "venv", "--quiet", "--python", Path(sys._base_executable).resolve(), venv)
    (wheel,) = dist.glob("*.whl")
    # The lock as constraints: the versions CI tests, from uv's cache after the first run.
    _run(uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python", "-c", REPO / "requirements.lock", wheel)
    return dist, venv


def _venv_env(venv: Path, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", AIRFLOW_HOME=str(home),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"))
    return env


@pytest.mark.packaging
def test_sdist_and_wheel_pass_twine_check_and_the_wheel_holds_the_package_and_its_entry_points(wheel_venv):
    dist, _ = wheel_venv
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    assert "PASSED" in _run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        entry_points, metadata = archive.read(entry_points).decode(), archive.read(metadata).decode()
    assert "airflow_mlops/get_provider_info.py" in names and "airflow_mlops/utils/extras.py" in names
    assert not [n for n in names if n.startswith(("tests/", "dags/", "benchmarks/"))]
    assert "provider_info = airflow_mlops.get_provider_info:get_provider_info" in entry_points
    assert "airflow-mlops = airflow_mlops.cli:main" in entry_points
    # Ranges, not the lock's pins: a user's Airflow stays as it is.
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "Requires-Dist: apache-airflow>=3.2.0" in requires
    assert not [line for line in requires if "==" in line and "extra ==" not in line]
    assert any(line.startswith("Requires-Dist: pyspark") and 'extra == "spark"' in line for line in requires)


@pytest.mark.packaging
def test_the_installed_wheel_alone_registers_the_provider_parses_the_example_dags_and_runs_the_cli(wheel_venv, tmp_path):
    _, venv = wheel_venv
    python, env = venv / "bin" / "python", _venv_env(venv, tmp_path / "airflow")

    # The package comes from the venv's site-packages, not from this checkout (run outside it).
    location = _run(python, "-c", "import airflow_mlops; print(airflow_mlops.__file__)", cwd=tmp_path, env=env)
    assert Path(location.strip()).is_relative_to(venv)

    providers = json.loads(_run(venv / "bin" / "airflow", "providers", "list", "-o", "json", cwd=tmp_path, env=env))
    assert "airflow-mlops" in {provider["package_name"] for provider in providers}

    # The repo's example DAGs parse with what the wheel (and its dependencies) provide.
    probe = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "print(json.dumps({'errors': bag.import_errors, 'files': sorted({d.fileloc for d in bag.dags.values()}), "
        "'dags': sorted(bag.dag_ids)}))\n"
    )
    parsed = json.loads(_run(python, "-c", probe, cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert parsed["errors"] == {}
    assert parsed["files"] == sorted(str(path) for path in (REPO / "dags").glob("*.py"))
    assert {"fraud_detection", "wine_quality_retrain", "reproduce_run"} <= set(parsed["dags"])

    assert "usage: airflow-mlops" in _run(venv / "bin" / "airflow-mlops", "--help", cwd=tmp_path, env=env)


@pytest.mark.packaging
def test_the_wheel_without_the_spark_extra_fails_a_spark_feature_naming_the_extra(wheel_venv, tmp_path):
    _, venv = wheel_venv
    env = _venv_env(venv, tmp_path / "airflow")
    probe = (
        "import importlib.util\n"
        "assert importlib.util.find_spec('pyspark') is None, 'pyspark is installed without the extra'\n"
        "from airflow_mlops.errors import MlopsError\n"
        "from airflow_mlops.hooks.spark import SparkHook\n"
        "try:\n"
        "    with SparkHook(spark_conn_id=None).session():\n"
        "        pass\n"
        "except MlopsError as error:\n"
        "    print(error)\n"
    )
    out = _run(venv / "bin" / "python", "-c", probe, cwd=tmp_path, env=env).strip()
    assert out == ("a Spark session needs the 'spark' extra of airflow-mlops (not installed: pyspark, "
                   "airflow.providers.apache.spark): pip install 'airflow-mlops[spark]'")


# --- the integrations' floors: what the code calls, at the installed versions ----------------


@pytest.mark.floor
def test_the_amazon_providers_s3hook_gives_the_client_of_the_connection_as_the_snapshot_store_opens_it(monkeypatch):
    """SnapshotStoreHook's call (S3Hook(aws_conn_id=...).get_conn()): endpoint and region from the connection, no request made."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    monkeypatch.setenv("AIRFLOW_CONN_AWS_FLOOR", json.dumps({
        "conn_type": "aws", "login": "key-id", "password": "secret",
        "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-3"},
    }))
    client = S3Hook(aws_conn_id="aws_floor").get_conn()
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-west-3"
    assert client.meta.service_model.service_name == "s3"


@pytest.mark.floor
def test_a_spark_session_from_the_hook_runs_a_job_on_local_spark():
    """pyspark and the hook's JVM start-up (properties file through PYSPARK_SUBMIT_ARGS), in a process of its own."""
    probe = (
        "from airflow_mlops.hooks.spark import SparkHook\n"
        "with SparkHook(spark_conn_id=None, conf={'spark.ui.enabled': 'false', 'spark.sql.shuffle.partitions': '2'}).session() as spark:\n"
        "    print('RESULT', spark.range(10).selectExpr('sum(id) AS total').collect()[0].total, spark.conf.get('spark.sql.shuffle.partitions'))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("RESULT ")] == ["RESULT 45 2"], result.stdout[-3000:]
