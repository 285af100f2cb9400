"""MLflow: one parent run per sweep, one child run per trial.

Everything goes through ``MlflowClient`` with explicit run ids, so several processes
(the distributed workers) can log into one sweep. A trial is identified by its
``cnnstudy.trial_key`` tag: a re-run sweep finds finished trials by that key and
never logs them twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from cnnstudy.tracking.provenance import device_description, git_commit, package_versions
from cnnstudy.tracking.queries import children_filter, latest_parent
from cnnstudy.tracking.store import (
    FINGERPRINT,
    KEY,
    KIND,
    PARENT,
    STAGE,
    SWEEP_ID,
    WORKER,
    ensure_experiment,
    get_client,
)

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
        parent = None if new else latest_parent(client, exp_id, fingerprint)
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

    def set_parent_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.parent_run_id, key, value)

    def parent_tag(self, key: str) -> str | None:
        return self.client.get_run(self.parent_run_id).data.tags.get(key)

    def parent(self):  # noqa: ANN201 - mlflow.entities.Run
        return self.client.get_run(self.parent_run_id)

    def mark_running(self) -> None:
        self.client.update_run(self.parent_run_id, status="RUNNING")

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)

    # -- children
    def trial_runs(self, key: str) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=children_filter(self.parent_run_id, f"tags.`{KEY}` = '{key}'"),
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


def log_report(parent_run_id: str, out_dir: Path) -> None:
    """The report's files, under the sweep's parent run as report/..."""
    get_client().log_artifacts(parent_run_id, str(out_dir), "report")
