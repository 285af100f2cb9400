"""The `cnnstudy` command: sweep, shapes, validate, schema, variants, export, ui."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from cnnstudy.core.study import StudyError, load_study
from cnnstudy.core.variants import variants

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
            import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    if keras.backend.backend() == "jax":
        persist_jax_compilations()


def persist_jax_compilations() -> None:
    """Under JAX, keep every compiled step on disk (JAX's persistent compilation cache) in
    ``$JAX_COMPILATION_CACHE_DIR``, else ``<state dir>/jax-cache``. Every trial builds a new
    model, and JAX would compile its train, test and predict steps again; a trial of a variant
    and learning rate seen before (another seed, a resumed sweep, another worker) reads them
    back instead (`make bench-gpu`'s compilation rows). CNNSTUDY_JAX_CACHE=0 turns it off."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if os.environ.get("CNNSTUDY_JAX_CACHE") == "0":
        jax.config.update("jax_enable_compilation_cache", False)
        return
    current = jax.config.jax_compilation_cache_dir
    if current and current not in _JAX_CACHES_SET:
        return  # the user's own JAX_COMPILATION_CACHE_DIR
    state = Path(os.environ.get("CNNSTUDY_STATE_DIR", ".cnnstudy"))
    target = str((state / "jax-cache").absolute())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # CPU steps compile fast
    if current != target:
        jax.config.update("jax_compilation_cache_dir", target)
        compilation_cache.reset_cache()  # JAX decides once whether to cache: decide again
        _JAX_CACHES_SET.add(target)


_JAX_CACHES_SET: set[str] = set()


# ---------------------------------------------------------------- commands


def cmd_variants(args: argparse.Namespace) -> int:
    for name, v in variants().items():
        print(f"{name:<16} padding={v.padding:<6} downsample={v.downsample:<8} {v.level.summary}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study, args.set)
    grid = {k: list(s.values) for k, s in study.nuisance.items()}
    print(
        f"{study.path}: ok. study {study.name!r} on {study.dataset}, "
        f"{len(study.variants)} variants x {study.seeds} seeds, tuning grid {grid}"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from cnnstudy.core.study import study_schema

    print(json.dumps(study_schema(), indent=2))
    return 0


def cmd_shapes(args: argparse.Namespace) -> int:
    import csv

    from cnnstudy.nets.shapes import COLUMNS, format_shape, variant_table

    study = load_study(args.study, args.set)
    rows = []
    for v in study.variants:
        settings = study.settings({k: s.values[0] for k, s in study.nuisance.items()}, v)
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
    from cnnstudy.run.launch import launch

    argv = [args.study, *(x for s in args.set for x in ("--set", s))]
    return launch(study, new=args.new, workers=args.workers, argv=argv)


def cmd_export(args: argparse.Namespace) -> int:
    from cnnstudy.tracking import export_runs, find_sweep

    study = load_study(args.study, args.set)
    parent = find_sweep(study.name, args.run_id)
    print(export_runs(parent, RESULTS / study.name))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cnnstudy.report.builder import make_report, summarize_for_terminal
    from cnnstudy.tracking import find_sweep

    name = None if args.run_id else load_study(args.study, args.set).name
    parent = find_sweep(name or "", args.run_id)
    out_dir = make_report(parent, RESULTS)
    print(summarize_for_terminal(out_dir))
    print(
        f"\nwrote {out_dir}/report.html and report.md (+ summary.csv, verdicts.csv, "
        f"claims.csv, figures/); logged to MLflow run {parent.info.run_id} under report/"
    )
    return 0


def cmd_atlas(args: argparse.Namespace) -> int:
    from cnnstudy.run.atlas import load_atlas

    atlas = load_atlas(args.atlas)  # every study file checked before anything trains
    import_backend_quietly()
    from cnnstudy.run.atlas import run_atlas

    # README shows the project's atlas (experiments/atlas.toml), not a custom one
    default = Path(args.atlas).resolve() == Path("experiments/atlas.toml").resolve()
    return run_atlas(atlas, readme=Path("README.md") if default else None)


def cmd_probes(args: argparse.Namespace) -> int:
    from cnnstudy.nets import controls, probes

    if not args.controls:
        print((probes.__doc__ or "").strip())
        print("\nRun `cnnstudy probes --controls` to check every probe on known-answer models.")
        return 0
    print("known-answer controls (expected vs measured):", flush=True)

    def show(c: controls.Control) -> None:
        result = "PASS" if c.passed else "FAIL"
        print(
            f"  {result}  {c.control}\n        {c.probe}: expected {c.expected:.3g}, "
            f"measured {c.measured:.4g} ({c.rule})",
            flush=True,
        )

    results = controls.run_controls(progress=show)
    if args.out:
        import pandas as pd

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([c.row() for c in results]).to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    failed = [c for c in results if not c.passed]
    print(f"{len(results) - len(failed)}/{len(results)} controls passed")
    return 1 if failed else 0


def cmd_ui(args: argparse.Namespace) -> int:
    from cnnstudy.tracking import check_store, tracking_uri

    uri = tracking_uri()
    check_store(uri)  # a broken store: say so here, not in the server's traceback
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

    p = sub.add_parser("schema", help="print the JSON schema of a study file (for editors)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("variants", help="list the registered variants")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("atlas", help="sweep + report every study of an atlas file, then pool")
    p.add_argument(
        "atlas",
        nargs="?",
        default="experiments/atlas.toml",
        help="atlas file (default: %(default)s)",
    )
    p.set_defaults(func=cmd_atlas)

    p = sub.add_parser("probes", help="the claim probes; --controls checks them on known answers")
    p.add_argument(
        "--controls", action="store_true", help="run every probe's known-answer controls"
    )
    p.add_argument("--out", help="also write the controls table to this csv")
    p.set_defaults(func=cmd_probes)

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
        from cnnstudy.nets.data import DataError
        from cnnstudy.run.locking import SweepBusyError
        from cnnstudy.tracking.store import StoreError

        expected = (StudyError, DataError, LookupError, SweepBusyError, StoreError)
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
