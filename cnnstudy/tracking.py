"""MLflow: one experiment per study, one parent run per sweep, one child run per trial.

Everything goes through ``MlflowClient`` with explicit run ids, so several processes
(the distributed workers) can log into one sweep. A trial is identified by its
``cnnstudy.trial_key`` tag: a re-run sweep finds finished trials by that key and
never logs them twice.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
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
PACKAGES = (
    "cnnstudy",
    "keras",
    "keras-tuner",
    "mlflow",
    "tensorflow",
    "tensorflow-cpu",
    "jax",
    "torch",
    "numpy",
    "scipy",
    "statsmodels",
    "pandas",
    "scikit-learn",
)


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


# ---------------------------------------------------------------- provenance


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_description() -> str:
    """The accelerator the backend trains on, without backend-specific model code."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return ", ".join(str(d.device_kind) for d in jax.devices())
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        if backend == "tensorflow":
            import tensorflow as tf  # provenance only: model code never touches tf.*

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                return ", ".join(g.name for g in gpus)
    except Exception:  # noqa: BLE001 - provenance must never stop a sweep
        pass
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# ---------------------------------------------------------------- the sweep's runs


class SweepTracker:
    """The parent run of one sweep, and the child runs of its trials."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, sweep_id: str):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep_id = sweep_id

    # -- parent
    @classmethod
    def latest_parent(cls, client: MlflowClient, experiment_id: str, fingerprint: str):
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{KIND}` = 'sweep' and tags.`{FINGERPRINT}` = '{fingerprint}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    @classmethod
    def open(
        cls,
        study_name: str,
        fingerprint: str,
        *,
        new: bool = False,
        run_name: str | None = None,
    ) -> tuple[SweepTracker, bool]:
        """Resume this study's latest sweep with the same fingerprint, or start one.

        Returns the tracker and whether the sweep was already finished.
        """
        client = get_client()
        exp_id = ensure_experiment(client, study_name)
        parent = None if new else cls.latest_parent(client, exp_id, fingerprint)
        if parent is not None:
            tracker = cls(client, exp_id, parent.info.run_id, parent.data.tags[SWEEP_ID])
            finished = parent.info.status == "FINISHED"
            if not finished:
                client.update_run(parent.info.run_id, status="RUNNING")
            return tracker, finished
        sweep_id = fingerprint if not new else f"{fingerprint}-{time.strftime('%Y%m%d%H%M%S')}"
        run = client.create_run(
            exp_id,
            run_name=run_name or f"sweep-{sweep_id}",
            tags={KIND: "sweep", FINGERPRINT: fingerprint, SWEEP_ID: sweep_id},
        )
        return cls(client, exp_id, run.info.run_id, sweep_id), False

    @classmethod
    def attach(cls, parent_run_id: str) -> SweepTracker:
        """The sweep's parent run opened by someone else (the distributed orchestrator)."""
        client = get_client()
        parent = client.get_run(parent_run_id)
        return cls(client, parent.info.experiment_id, parent_run_id, parent.data.tags[SWEEP_ID])

    def record_provenance(self, study_path: str, resolved: dict[str, Any], extra: dict[str, str]):
        import keras

        tags = {
            "cnnstudy.git_commit": git_commit(),
            "cnnstudy.backend": keras.backend.backend(),
            "cnnstudy.device": device_description(),
            "cnnstudy.study_file": study_path,
            **{f"version.{k}": v for k, v in package_versions().items()},
            **extra,
        }
        self.client.log_batch(self.parent_run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.log_artifact(self.parent_run_id, study_path, "study")
        self.log_json(self.parent_run_id, resolved, "study/resolved.json")

    def log_json(self, run_id: str, obj: Any, artifact_path: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_path).name
            path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
            self.client.log_artifact(run_id, str(path), str(Path(artifact_path).parent) or None)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)

    # -- children
    def trial_runs(self, key: str) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{self.parent_run_id}' and tags.`{KEY}` = '{key}'",
            run_view_type=mlflow.entities.ViewType.ACTIVE_ONLY,
        )

    def finished_trial(self, key: str, earlier: list | None = None):
        """The FINISHED run of this trial, if a previous process completed it."""
        runs = self.trial_runs(key) if earlier is None else earlier
        done = [r for r in runs if r.info.status == "FINISHED"]
        return done[0] if done else None

    def start_trial(
        self, key: str, stage: str, name: str, params: dict[str, Any], earlier: list | None = None
    ) -> str:
        """Open a child run; an earlier attempt left RUNNING by a killed process becomes KILLED."""
        for stale in self.trial_runs(key) if earlier is None else earlier:
            if stale.info.status == "RUNNING":
                self.client.set_tag(
                    stale.info.run_id, "cnnstudy.failure", "interrupted (process died)"
                )
                self.client.set_terminated(stale.info.run_id, status="KILLED")
        tags = {
            KIND: "trial",
            STAGE: stage,
            KEY: key,
            PARENT: self.parent_run_id,
            WORKER: os.environ.get("KERASTUNER_TUNER_ID", "local"),
        }
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        # Synchronous on purpose: MLflow's async queue measured slower here (make bench).
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end_trial(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self.client.set_tag(run_id, "cnnstudy.failure", reason[:5000])
        self.client.set_terminated(
            run_id, status=RunStatus.to_string(RunStatus.from_string(status))
        )
