"""Every read of a sweep back from MLflow: its parent run, its trials as tidy tables
(results/<study>/runs.csv), their metric histories and artifacts."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from cnnstudy.tracking.store import (
    FINGERPRINT,
    KIND,
    PARENT,
    STAGE,
    WORKER,
    ensure_experiment,
    get_client,
)

ID_COLUMNS = ["run_id", "status", "failure", "variant", "padding", "downsample", "seed", "stage"]


def find_sweep(study_name: str, run_id: str | None = None):
    """The given parent run, or the study's most recent sweep (finished ones first)."""
    client = get_client()
    if run_id:
        return client.get_run(run_id)
    exp = client.get_experiment_by_name(study_name)
    if exp is None:
        raise LookupError(
            f"no MLflow experiment named {study_name!r} in {mlflow.get_tracking_uri()}. "
            f"Run `make sweep EXP=experiments/{study_name}.toml` first."
        )
    for status in ("FINISHED", None):
        extra = f" and attributes.status = '{status}'" if status else ""
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{KIND}` = 'sweep'{extra}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            return runs[0]
    raise LookupError(f"experiment {study_name!r} has no sweep run yet. Run `make sweep` first.")


def trial_runs(parent, stage: str | None = "replicate") -> pd.DataFrame:
    """The sweep's child runs as a DataFrame, one row per trial (KILLED attempts dropped)."""
    filt = f"tags.`{PARENT}` = '{parent.info.run_id}' and tags.`{KIND}` = 'trial'"
    if stage:
        filt += f" and tags.`{STAGE}` = '{stage}'"
    df = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id], filter_string=filt, max_results=50000
    )
    if df.empty:
        return df
    df = df[df["status"] != "KILLED"].copy()
    renamed = {c: c.split(".", 1)[1] for c in df.columns if c.startswith(("params.", "metrics."))}
    df = df.rename(columns=renamed)
    df["failure"] = df.get("tags.cnnstudy.failure", pd.Series(index=df.index, dtype=object))
    df = df[[c for c in df.columns if not c.startswith("tags.")]]
    df = df.drop(columns=[c for c in ("experiment_id", "artifact_uri", "end_time") if c in df])
    if "seed" in df:
        df["seed"] = pd.to_numeric(df["seed"])
    for col in df.columns:
        textual = df[col].dtype == object or pd.api.types.is_string_dtype(df[col])
        if textual and col not in ID_COLUMNS:
            converted = pd.to_numeric(df[col], errors="coerce")
            if converted.notna().sum() == df[col].notna().sum():
                df[col] = converted
    first = [c for c in ID_COLUMNS if c in df]
    df = df[first + sorted(c for c in df.columns if c not in first)]
    return df.sort_values(["variant", "seed"] if "seed" in df else ["variant"]).reset_index(
        drop=True
    )


def export_runs(parent, out_dir: Path) -> Path:
    """Write runs.csv: one row per replicate trial, params and final metrics from MLflow."""
    df = trial_runs(parent, "replicate")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "runs.csv"
    df = df.drop(columns=[c for c in ("start_time",) if c in df])
    df.to_csv(path, index=False, float_format="%.6g")
    return path


def children_filter(parent_run_id: str, extra: str = "") -> str:
    """The filter string for a sweep's child runs (plus an ``and ...`` clause)."""
    return f"tags.`{PARENT}` = '{parent_run_id}'" + (f" and {extra}" if extra else "")


def has_trials(client, experiment_id: str, parent_run_id: str) -> bool:  # noqa: ANN001
    """Has this sweep logged any trial yet?"""
    return bool(client.search_runs([experiment_id], children_filter(parent_run_id), max_results=1))


def trials_by_worker(client, experiment_id: str, parent_run_id: str) -> dict[str, int]:  # noqa: ANN001
    """How many finished trials each worker (tag cnnstudy.worker) ran."""
    runs = client.search_runs(
        [experiment_id],
        children_filter(parent_run_id, "attributes.status = 'FINISHED'"),
        max_results=10000,
    )
    counts: dict[str, int] = {}
    for r in runs:
        w = r.data.tags.get(WORKER, "?")
        counts[w] = counts.get(w, 0) + 1
    return counts


def latest_parent(client, experiment_id: str, fingerprint: str):  # noqa: ANN001, ANN201
    """The study's most recent sweep run with this fingerprint, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KIND}` = 'sweep' and tags.`{FINGERPRINT}` = '{fingerprint}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def wait_for_open_sweep(study_name: str, fingerprint: str, timeout: float = 3600) -> str:
    """A worker on another machine: wait for the chief's open sweep; its parent run id."""
    client = get_client()
    exp_id = ensure_experiment(client, study_name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        parent = latest_parent(client, exp_id, fingerprint)
        if parent is not None and parent.info.status != "FINISHED":
            return parent.info.run_id
        time.sleep(2.0)
    raise TimeoutError(f"no open sweep of study {study_name!r} appeared; is the chief running?")


def metric_histories(runs: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Per-epoch curves of the given runs: one row per (variant, seed, epoch)."""
    client = get_client()
    rows = [
        {"variant": r.variant, "seed": r.seed, "epoch": m.step, "metric": metric, "value": m.value}
        for r in runs.itertuples()
        for metric in metrics
        for m in client.get_metric_history(r.run_id, metric)
    ]
    return (
        pd.DataFrame(rows)
        .pivot_table(index=["variant", "seed", "epoch"], columns="metric", values="value")
        .reset_index()
    )


def layer_tables(runs: pd.DataFrame) -> pd.DataFrame:
    """Each variant's layer table, from the first of its runs."""
    client = get_client()
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant, group in runs.groupby("variant"):
            path = client.download_artifacts(group.iloc[0]["run_id"], "layers.csv", tmp)
            tables.append(pd.read_csv(path).assign(variant=variant))
    return pd.concat(tables, ignore_index=True)


def resolved_study(parent) -> dict:  # noqa: ANN001
    """The resolved study config the sweep ran with ({} for an old sweep without it)."""
    client = get_client()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(parent.info.run_id, "study/resolved.json", tmp)
        except Exception:  # noqa: BLE001 - an old sweep without it still gets a report
            return {}
        return json.loads(Path(path).read_text())


def experiment_name(parent) -> str:  # noqa: ANN001
    return get_client().get_experiment(parent.info.experiment_id).name
