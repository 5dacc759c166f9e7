"""Optional integrations installed through an extra: a one-line error naming the extra when one is missing."""

from __future__ import annotations

import importlib.util

from airflow_mlops.errors import MlopsError

#: What each extra of the distribution brings, by importable module.
EXTRAS = {
    "spark": ("pyspark", "airflow.providers.apache.spark"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def require_extra(extra: str, feature: str) -> None:
    """Raise an :class:`MlopsError` saying which extra to install when ``feature`` needs one that is missing."""
    missing = [module for module in EXTRAS[extra] if not _installed(module)]
    if missing:
        raise MlopsError(
            f"{feature} needs the '{extra}' extra of airflow-mlops (not installed: {', '.join(missing)}): "
            f"pip install 'airflow-mlops[{extra}]'"
        )
