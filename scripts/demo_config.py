"""Write the demo home's airflow.cfg: what `make demo` and `make up` run with, usable by hand as well.

    python scripts/demo_config.py DEMO_HOME DAGS_FOLDER AIRFLOW_PORT MLFLOW_PORT

Settings: the DAGs folder and no Airflow examples; ``[api] port`` and ``base_url`` on the chosen port
(the task supervisor reaches the execution API at ``base_url``); ``[airflow_mlops] mlflow_ui_url``.
The secrets Airflow generates into a config it writes itself (``[core] fernet_key``, ``[api_auth]
jwt_secret``, ``[api] secret_key``, shared by every component of ``airflow standalone``) are kept from
the file already there, else generated once. A config Airflow wrote with its own defaults is kept
aside as ``airflow.cfg.airflow-default``. Written atomically (temp file, then rename).
"""

from __future__ import annotations

import base64
import configparser
import os
import sys
from pathlib import Path

MARKER = "# written by make demo / make up (scripts/demo_config.py)"
SECRETS = {("core", "fernet_key"), ("api_auth", "jwt_secret"), ("api", "secret_key")}


def generated(section: str, option: str) -> str:
    """A new secret of the kind Airflow generates for ``section.option``."""
    if option == "fernet_key":
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    return base64.b64encode(os.urandom(16)).decode()


def main(home: str, dags_folder: str, airflow_port: str, mlflow_port: str) -> None:
    path = Path(home) / "airflow.cfg"
    old = configparser.ConfigParser(interpolation=None)
    if path.exists():
        old.read(path)
    config = configparser.ConfigParser(interpolation=None)
    config.read_dict({
        "core": {"dags_folder": dags_folder, "load_examples": "False"},
        "api": {"port": airflow_port, "base_url": f"http://127.0.0.1:{airflow_port}"},
        "api_auth": {},
        "airflow_mlops": {"mlflow_ui_url": f"http://127.0.0.1:{mlflow_port}"},
    })
    for section, option in sorted(SECRETS):
        kept = old.get(section, option, fallback="")
        config.set(section, option, kept or generated(section, option))
    if path.exists() and not path.read_text().startswith(MARKER):
        path.replace(path.with_name("airflow.cfg.airflow-default"))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".airflow.cfg.{os.getpid()}")
    with temporary.open("w") as file:
        file.write(MARKER + "\n")
        config.write(file)
    os.chmod(temporary, 0o600)  # it holds the secrets
    temporary.replace(path)


if __name__ == "__main__":
    main(*sys.argv[1:])
