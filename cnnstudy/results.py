"""Read a sweep's runs back from MLflow into tidy tables (results/<study>/runs.csv)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from cnnstudy.tracking import KIND, PARENT, STAGE, get_client

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
