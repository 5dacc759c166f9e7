"""Which model scores: a reference resolved once, at the start, to one concrete model version."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from airflow_mlops.errors import MlopsError

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_RUN = re.compile(r"^runs:/(?P<run_id>[^/]+)/.+$")


class PredictError(MlopsError):
    """A batch prediction cannot run as asked; nothing was recorded."""


@dataclass(frozen=True)
class ResolvedModel:
    """The model that scores: its registry name and version (None for a run's model), run and loadable URI.

    ``model_uri`` names the version (``models:/NAME/VERSION``), never an alias, so a promotion
    while the task runs cannot change what scores.
    """

    model_uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    alias: str | None = None

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def resolve_model(client: Any, reference: str | dict[str, Any]) -> ResolvedModel:
    """Pin ``reference`` to a concrete model.

    ``reference`` is ``models:/NAME@ALIAS`` (looked up now), ``models:/NAME/VERSION``,
    ``runs:/RUN_ID/PATH``, or an MlflowTrainOperator result (its ``model_uri``).
    """
    text = reference.get("model_uri") if isinstance(reference, dict) else reference
    if not isinstance(text, str) or not text:
        raise PredictError(f"model must be models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH "
                           f"or a training task's result with a model_uri, got {reference!r}")
    registered = _REGISTERED.match(text)
    if registered:
        name, alias = registered["name"], registered["alias"]
        try:
            found = (client.get_model_version_by_alias(name, alias) if alias
                     else client.get_model_version(name, registered["version"]))
        except Exception as error:  # noqa: BLE001 - MLflow raises its own exception types for a missing name, alias or version
            raise PredictError(f"model {text} not found in the registry: {str(error).splitlines()[0]}") from None
        return ResolvedModel(f"models:/{name}/{found.version}", name, str(found.version), found.run_id, alias)
    run = _RUN.match(text)
    if run:
        return ResolvedModel(text, run_id=run["run_id"])
    raise PredictError(f"model {text!r} is not models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH")
