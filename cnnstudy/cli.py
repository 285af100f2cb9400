"""The `cnnstudy` command: sweep, shapes, validate, variants, export, ui."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from cnnstudy.config import StudyError, load_study
from cnnstudy.variants import VARIANTS

RESULTS = Path("results")


def quiet_frameworks() -> None:
    """Silence TensorFlow/absl start-up noise and MLflow's migration logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("alembic", "mlflow", "absl", "tensorflow", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


def import_backend_quietly() -> None:
    """Import Keras with C-level stderr muted: TensorFlow's C++ start-up lines (oneDNN,
    cuDNN/cuBLAS factories, absl) ignore TF_CPP_MIN_LOG_LEVEL. (Never switch oneDNN off to
    hide them: TF_ENABLE_ONEDNN_OPTS=0 halves TensorFlow's CPU speed.)"""
    import sys as _sys

    _sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ---------------------------------------------------------------- commands


def cmd_variants(args: argparse.Namespace) -> int:
    for name, v in VARIANTS.items():
        print(f"{name:<16} padding={v.padding:<6} downsample={v.downsample}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study, args.set)
    grid = {k: list(s.values) for k, s in study.nuisance.items()}
    print(
        f"{study.path}: ok. study {study.name!r} on {study.dataset}, "
        f"{len(study.variants)} variants x {study.seeds} seeds, tuning grid {grid}"
    )
    return 0


def cmd_shapes(args: argparse.Namespace) -> int:
    import csv

    from cnnstudy.shapes import COLUMNS, format_shape, variant_table

    study = load_study(args.study, args.set)
    rows = []
    for v in study.variants:
        settings = study.settings({k: s.values[0] for k, s in study.nuisance.items()})
        rows += variant_table(v, settings, study.input_shape, study.n_classes)
    for row in rows:
        row["input_shape"] = format_shape(row["input_shape"])
        row["output_shape"] = format_shape(row["output_shape"])
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return 0
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    print("  ".join(c.ljust(widths[c]) for c in COLUMNS))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    study = load_study(args.study, args.set)  # every check before anything trains
    import_backend_quietly()
    from cnnstudy.locking import sweep_lock
    from cnnstudy.results import export_runs
    from cnnstudy.sweep import state_root
    from cnnstudy.tracking import tracking_uri

    print(
        f"cnnstudy: study {study.name!r} ({study.path}) on {study.dataset}: "
        f"{len(study.variants)} variants, tuning grid of {study.n_tuning_points()}, "
        f"{study.seeds} seeds -> {study.n_trials} trials",
        flush=True,
    )
    started = time.perf_counter()
    splits = study.load_splits()
    print(f"data: {splits.sizes()} loaded in {time.perf_counter() - started:.1f}s", flush=True)

    from cnnstudy import distributed

    if distributed.role():  # a chief or worker process started by --workers
        return _run_role(study, splits)
    lock = state_root() / study.name / f"{study.fingerprint}.lock"
    with sweep_lock(lock, study.name):
        if args.workers:
            child_args = [args.study, *(x for s in args.set for x in ("--set", s))]
            log_dir = state_root().parent / "logs" / study.name
            return distributed.run_distributed(child_args, args.workers, study, log_dir)
        tracker, status = _run_sweep(study, splits, args.new)
        if status:
            return status
    out = export_runs(tracker.client.get_run(tracker.parent_run_id), RESULTS / study.name)
    print(
        f"\ndone in {time.perf_counter() - started:.0f}s.\n"
        f"  runs:      {out} (one row per replicate trial, read back from MLflow)\n"
        f"  MLflow:    {tracking_uri()}, experiment {study.name!r}, "
        f"parent run {tracker.parent_run_id}\n"
        f"  UI:        make ui   (then open http://127.0.0.1:5000)\n"
        f"  report:    make report EXP={study.path}"
    )
    return 0


def _run_role(study, splits) -> int:  # noqa: ANN001
    from cnnstudy.distributed import PARENT_ENV, find_parent, role
    from cnnstudy.sweep import Sweep
    from cnnstudy.tracking import SweepTracker

    if PARENT_ENV in os.environ:  # started by --workers
        tracker = SweepTracker.attach(os.environ[PARENT_ENV])
    elif role() == "chief":  # across machines: the chief opens (or resumes) the sweep
        tracker, _ = SweepTracker.open(study.name, study.fingerprint)
        tracker.record_provenance(
            study.path, study.resolved, {"cnnstudy.command": " ".join(sys.argv)}
        )
    else:  # a worker finds the chief's sweep by the study's fingerprint
        tracker = find_parent(study)
    Sweep(study, splits, tracker).run()
    if role() == "chief" and PARENT_ENV not in os.environ:
        tracker.close("FINISHED")
    return 0


def _run_sweep(study, splits, new: bool):  # noqa: ANN001, ANN202
    """Open (or resume) the sweep's parent run and run the missing trials."""
    from cnnstudy.sweep import Sweep, clear_stale_state, state_root
    from cnnstudy.tracking import SweepTracker

    tracker, finished = SweepTracker.open(study.name, study.fingerprint, new=new)
    directory = state_root() / study.name / tracker.sweep_id
    if finished:
        print(
            f"sweep {tracker.sweep_id} is already complete (MLflow run {tracker.parent_run_id}); "
            "nothing to train. Use --new for a fresh sweep."
        )
    else:
        if not tracker.client.search_runs(
            [tracker.experiment_id],
            f"tags.`mlflow.parentRunId` = '{tracker.parent_run_id}'",
            max_results=1,
        ):
            clear_stale_state(directory)  # tuner state left from a deleted store
            tracker.record_provenance(
                study.path, study.resolved, {"cnnstudy.command": " ".join(sys.argv)}
            )
        sweep = Sweep(study, splits, tracker)
        try:
            sweep.run()
        except KeyboardInterrupt:
            tracker.close("KILLED")
            print(
                "\ninterrupted: finished trials are kept; run the same command to resume.",
                file=sys.stderr,
            )
            return tracker, 130
        tracker.close("FINISHED")
    return tracker, 0


def cmd_export(args: argparse.Namespace) -> int:
    from cnnstudy.results import export_runs, find_sweep

    study = load_study(args.study, args.set)
    parent = find_sweep(study.name, args.run_id)
    print(export_runs(parent, RESULTS / study.name))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cnnstudy.report import build_report, collect, log_to_parent, summarize_for_terminal
    from cnnstudy.results import export_runs, find_sweep

    name = None if args.run_id else load_study(args.study, args.set).name
    parent = find_sweep(name or "", args.run_id)
    data = collect(parent)
    out_dir = RESULTS / data.study
    print(
        f"report on sweep {parent.info.run_id} ({len(data.runs)} replicate runs, "
        f"{len(data.failed)} failed trials) ...",
        flush=True,
    )
    files = build_report(data, out_dir)
    files.append(export_runs(parent, out_dir))
    log_to_parent(parent, files, out_dir)
    print(summarize_for_terminal(out_dir))
    print(
        f"\nwrote {out_dir}/report.html and report.md (+ summary.csv, verdicts.csv, "
        f"claims.csv, figures/); logged to MLflow run {parent.info.run_id} under report/"
    )
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from cnnstudy.tracking import tracking_uri

    uri = tracking_uri()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"MLflow UI on http://{args.host}:{args.port} over {uri} (Ctrl-C to stop)", flush=True)
    os.execv(sys.executable, cmd)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnstudy", description="Which CNN design choice wins? Padding and downsampling."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_study(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "study",
            nargs="?",
            default="experiments/default.toml",
            help="study file or name (default: experiments/default.toml)",
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one value, e.g. --set study.seeds=1 (repeatable)",
        )

    p = sub.add_parser("sweep", help="tune and replicate every variant, logging to MLflow")
    with_study(p)
    p.add_argument("--new", action="store_true", help="start a fresh sweep instead of resuming")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run on keras-tuner's distributed mode: an MLflow server, a chief "
        "and N worker processes on this machine",
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("shapes", help="layer table of every variant (shapes from Keras)")
    with_study(p)
    p.add_argument("--format", choices=("table", "csv"), default="table")
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser("validate", help="check a study file without training")
    with_study(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("export", help="write results/<study>/runs.csv from MLflow")
    with_study(p)
    p.add_argument("--run-id", help="sweep parent run id (default: latest sweep)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="which design wins: statistics, figures, claims")
    with_study(p)
    p.add_argument("--run-id", help="sweep parent run id (default: the study's latest sweep)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("variants", help="list the registered variants")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("ui", help="serve the MLflow UI over the tracking store")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_frameworks()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        from cnnstudy.datasets import DataError
        from cnnstudy.locking import SweepBusyError

        expected = (StudyError, DataError, LookupError, SweepBusyError)
        if args.debug or not isinstance(err, expected):
            if args.debug:
                raise
            print(
                f"error: {type(err).__name__}: {err}\n(run with --debug for the traceback)",
                file=sys.stderr,
            )
            return 1
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
