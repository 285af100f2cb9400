"""``cnnstudy sweep``: lock the study, then run it here, on local workers, or as a role."""

from __future__ import annotations

import sys
import time

from cnnstudy.core.study import Study
from cnnstudy.run import distributed, roles
from cnnstudy.run.lifecycle import RESULTS, finish_sweep, load_data, open_sweep, run_role
from cnnstudy.run.locking import sweep_lock
from cnnstudy.run.sweep import Sweep, state_root
from cnnstudy.tracking import check_store, export_runs, tracking_uri


def launch(study: Study, *, new: bool = False, workers: int = 0, argv: list[str] = ()) -> int:
    """``cnnstudy sweep``: the whole sweep of one study, with a summary at the end.

    ``argv`` is the study argument and its ``--set`` overrides, passed on to the chief
    and workers when ``workers`` > 0.
    """
    print(
        f"cnnstudy: study {study.name!r} ({study.path}) on {study.dataset}: "
        f"{len(study.variants)} variants, tuning grid of {study.n_tuning_points()}, "
        f"{study.seeds} seeds -> {study.n_trials} trials",
        flush=True,
    )
    started = time.perf_counter()
    check_store()  # an unreadable store fails now, not after the data has loaded
    if roles.role():  # a chief or worker process
        return run_role(study, load_data(study))
    with sweep_lock(state_root() / study.name / f"{study.fingerprint}.lock", study.name):
        if workers:
            log_dir = state_root().parent / "logs" / study.name
            return distributed.run_distributed(list(argv), workers, study, log_dir)
        splits = load_data(study)
        tracker, finished = open_sweep(study, splits, new=new)
        if finished:
            print(
                f"sweep {tracker.sweep_id} is already complete (MLflow run "
                f"{tracker.parent_run_id}); nothing to train. Use --new for a fresh sweep."
            )
            out = export_runs(tracker.parent(), RESULTS / study.name)
        else:
            try:
                Sweep(study, splits, tracker).run()
            except KeyboardInterrupt:
                finish_sweep(tracker, study, "KILLED")
                print(
                    "\ninterrupted: finished trials are kept; run the same command to resume.",
                    file=sys.stderr,
                )
                return 130
            out = finish_sweep(tracker, study, "FINISHED")
    print(
        f"\ndone in {time.perf_counter() - started:.0f}s.\n"
        f"  runs:      {out} (one row per replicate trial, read back from MLflow)\n"
        f"  MLflow:    {tracking_uri()}, experiment {study.name!r}, "
        f"parent run {tracker.parent_run_id}\n"
        f"  UI:        make ui   (then open http://127.0.0.1:5000)\n"
        f"  report:    make report EXP={study.path}"
    )
    return 0
