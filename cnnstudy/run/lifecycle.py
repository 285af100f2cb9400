"""A sweep's life: open, run, close, export, the same steps for every way of running it.

open (or resume) the parent run and record provenance -> run the trials -> close the
parent run -> export runs.csv. ``cnnstudy sweep`` runs it in this process; ``--workers n``
runs the same steps with the trials handed to keras-tuner's chief and workers
(``run.distributed``); a chief started by hand on one machine of a lab opens the sweep
the same way, and a worker there finds it by the study's fingerprint.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from cnnstudy.core.study import Study
from cnnstudy.nets.data import Splits, study_splits
from cnnstudy.run import roles
from cnnstudy.run.sweep import Sweep, state_root
from cnnstudy.tracking import (
    SweepTracker,
    export_runs,
    has_trials,
    parent_table,
    wait_for_open_sweep,
)

RESULTS = Path("results")


def open_sweep(
    study: Study, splits: Splits | None = None, *, new: bool = False, **tags: str
) -> tuple[SweepTracker, bool]:
    """Resume the study's sweep (same fingerprint) or start one; True if already finished.

    A sweep with no trial yet gets its provenance and its datasets (``splits``, the
    parent run's dataset inputs) now, and loses any tuner state left from a deleted store.
    The distributed orchestrator opens it without data; its chief logs the datasets.
    """
    tracker, finished = SweepTracker.open(study.name, study.fingerprint, new=new)
    if finished:
        return tracker, True
    tracker.mark_running()
    if not has_trials(tracker.client, tracker.experiment_id, tracker.parent_run_id):
        stale = state_root() / study.name / tracker.sweep_id
        if stale.exists():
            shutil.rmtree(stale)
        tracker.record_provenance(
            study.path,
            study.resolved,
            {"cnnstudy.command": " ".join(sys.argv), **tags},
            note=describe(study),
        )
        if splits is not None:
            tracker.log_datasets(splits, source=study.data_path or None)
    return tracker, False


def describe(study: Study) -> str:
    """The parent run's description (MLflow's note) until `make report` puts the verdict."""
    return (
        f"Sweep of study **{study.name}** (`{study.path}`) on `{study.dataset}`: "
        f"{len(study.variants)} variants, tuning grid of {study.n_tuning_points()}, "
        f"{study.seeds} seeds, {study.n_trials} trials (the child runs, stage `tune` or "
        f"`replicate`). `make report EXP={study.path}` replaces this note with the verdict."
    )


def finish_sweep(tracker: SweepTracker, study: Study, status: str) -> Path | None:
    """Close the parent run; a finished sweep first gets its timing pass, then writes
    results/<study>/runs.csv."""
    if status == "FINISHED":
        time_variants(tracker, study)
    tracker.close(status)
    if status != "FINISHED":
        return None
    return export_runs(tracker.parent(), RESULTS / study.name)


TIMING_TABLE = "timing/timing.json"


def time_variants(tracker: SweepTracker, study: Study) -> None:
    """The cost claims' numbers: every variant timed in one process, interleaved, in random
    order, ``[fixed] timing_repeats`` rounds (``nets.timing``); logged as an MLflow table."""
    repeats = study.fixed.get("timing_repeats", 0)
    if not repeats or not parent_table(tracker.parent(), TIMING_TABLE).empty:
        return
    from cnnstudy.nets.timing import interleaved_timing

    started = time.perf_counter()
    table = interleaved_timing(
        study.variants,
        lambda v: study.settings({k: s.values[0] for k, s in study.nuisance.items()}, v),
        study.input_shape,
        study.n_classes,
        repeats=repeats,
    )
    tracker.log_table(tracker.parent_run_id, table, TIMING_TABLE)
    print(
        f"timing pass: {len(study.variants)} variants x {repeats} interleaved rounds in "
        f"{time.perf_counter() - started:.0f}s",
        flush=True,
    )


def load_data(study: Study) -> Splits:
    started = time.perf_counter()
    splits = study_splits(study)
    print(f"data: {splits.sizes()} loaded in {time.perf_counter() - started:.1f}s", flush=True)
    return splits


def run_role(study: Study, splits: Splits) -> int:
    """A chief or worker of keras-tuner's distributed mode."""
    if roles.PARENT_ENV in os.environ:  # started by --workers: the sweep is open
        tracker = SweepTracker.attach(os.environ[roles.PARENT_ENV])
        if roles.role() == "chief":  # the orchestrator has no data: the chief logs it, once
            tracker.log_datasets(splits, source=study.data_path or None)
        Sweep(study, splits, tracker).run()
        return 0
    if roles.role() == "chief":  # across machines: the chief opens (or resumes) it
        tracker, finished = open_sweep(study, splits)
        if not finished:
            Sweep(study, splits, tracker).run()
            finish_sweep(tracker, study, "FINISHED")
        return 0
    # a worker on another machine finds the chief's sweep by the study's fingerprint
    tracker = SweepTracker.attach(wait_for_open_sweep(study.name, study.fingerprint))
    Sweep(study, splits, tracker).run()
    return 0
