"""The MLflow store: its URI, the client, one experiment per study, and the tag names.

Every MLflow write and read of cnnstudy lives in this package (``tracking``); the filter
strings that find a sweep's runs are built here and nowhere else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.tracking import MlflowClient

# mlflow sets its own logger up at import; keep its migration chatter off the terminal.
for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_URI = "sqlite:///mlflow.db"
KIND, STAGE, KEY, WORKER = (
    "cnnstudy.kind",
    "cnnstudy.stage",
    "cnnstudy.trial_key",
    "cnnstudy.worker",
)
FINGERPRINT, SWEEP_ID = "cnnstudy.fingerprint", "cnnstudy.sweep_id"
PARENT = "mlflow.parentRunId"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def get_client() -> MlflowClient:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _artifact_root(uri: str) -> str | None:
    """Next to a local sqlite store, artifacts go to ./mlartifacts (gitignored)."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None  # a tracking server decides where artifacts live
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts").as_uri()


# MLflow 3's UI opens an experiment on its GenAI tracing view unless told it is model training.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = _artifact_root(tracking_uri())
    return client.create_experiment(
        name,
        artifact_location=f"{root}/{name}" if root else None,
        tags=dict([EXPERIMENT_KIND]),
    )
