"""Every read of a sweep back from MLflow: its parent run, its trials as tidy tables
(results/<study>/runs.csv), their metric histories and artifacts."""

from __future__ import annotations

import ast
import io
import json
import time
from pathlib import Path
from urllib.parse import quote

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

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
    """The given parent run, or the study's most recent sweep (finished ones first).

    A local store that does not exist yet is a ``LookupError``, and is not created.
    """
    client = get_client(create=False)
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


def replicates_filter(parent_run_id: str) -> str:
    """The filter string for a sweep's FINISHED replicate runs (what the report reads)."""
    return children_filter(
        parent_run_id, f"tags.`{STAGE}` = 'replicate' and attributes.status = 'FINISHED'"
    )


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


LAYER_TABLE = "layers.json"  # the trial's layer table, an MLflow table (log_table)


def layer_tables(runs: pd.DataFrame) -> pd.DataFrame:
    """Each variant's layer table, from the first of its runs: the columns of
    ``core.layers.LAYER_COLUMNS`` plus run_id, shapes as tuples of ints."""
    client = get_client()
    first = runs.groupby("variant", sort=True)["run_id"].first()
    variant_of = {run_id: variant for variant, run_id in first.items()}
    experiment_id = client.get_run(first.iloc[0]).info.experiment_id
    try:
        # client.load_table, not mlflow.load_table: that one searches the *active*
        # experiment (Default unless set), never the sweep's own.
        table = client.load_table(
            experiment_id, LAYER_TABLE, run_ids=list(first), extra_columns=["run_id"]
        )
    except MlflowException:  # none of them has one (a sweep logged before layers.json)
        table = pd.DataFrame(columns=["run_id"])
    legacy = [  # older sweeps logged layers.csv, shapes written as "(8, 8, 1)"
        pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/layers.csv"))).assign(
            run_id=run_id
        )
        for run_id in first
        if run_id not in set(table["run_id"])
    ]
    table = pd.concat([table, *legacy], ignore_index=True)
    table["variant"] = table["run_id"].map(variant_of)
    for col in ("input_shape", "output_shape"):
        table[col] = table[col].map(_shape)
    return table


def _shape(value) -> tuple[int, ...]:  # noqa: ANN001 - a list (JSON), a string (CSV), a tuple
    if isinstance(value, str):
        value = ast.literal_eval(value)
    return tuple(int(d) for d in value)


def resolved_study(parent) -> dict:  # noqa: ANN001
    """The resolved study config the sweep ran with ({} for an old sweep without it)."""
    get_client()  # points mlflow at the store
    try:
        return mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/study/resolved.json")
    except Exception:  # noqa: BLE001 - an old sweep without it still gets a report
        return {}


def compare_runs_url(parent, base_url: str = "http://127.0.0.1:5000") -> str:  # noqa: ANN001
    """The MLflow UI's compare-runs page over the sweep's FINISHED replicate runs.

    The route is the UI's own (``Routes.getCompareRunPageRoute`` in MLflow 3's bundle):
    ``#/compare-runs?runs=[ids]&experiments=[ids]``, JSON lists (percent-encoded here; the
    page decodes them). Its parallel-coordinates plot starts on the first three params
    (alphabetically) that differ between the runs and the first metric they share (in
    logging order: ``loss``); nothing in the URL can preset them, so add ``variant``,
    ``learning_rate`` and ``test_accuracy`` in the plot's Parameters/Metrics boxes.
    ``parallel_coordinates_url`` opens a chart preset on exactly the design choices.
    """
    runs = get_client().search_runs(
        [parent.info.experiment_id], replicates_filter(parent.info.run_id), max_results=10000
    )
    if not runs:
        raise LookupError(f"sweep run {parent.info.run_id} has no finished replicate run yet.")
    runs.sort(key=lambda r: (r.data.params.get("variant", ""), r.data.params.get("seed", "")))
    ids = json.dumps([r.info.run_id for r in runs], separators=(",", ":"))
    experiments = json.dumps([parent.info.experiment_id])
    return (
        f"{base_url.rstrip('/')}/#/compare-runs?runs={quote(ids, safe='')}"
        f"&experiments={quote(experiments, safe='')}"
    )


def experiment_name(parent) -> str:  # noqa: ANN001
    return get_client().get_experiment(parent.info.experiment_id).name


def parent_table(parent, name: str) -> pd.DataFrame:  # noqa: ANN001
    """An MLflow table logged on the sweep's parent run (empty if it has none)."""
    client = get_client()
    try:
        return client.load_table(parent.info.experiment_id, name, run_ids=[parent.info.run_id])
    except MlflowException:
        return pd.DataFrame()
