"""`make bench-gpu`: the CIFAR-10 study's model at GPU speed, and where its time goes.

For every variant of the study (each padding x downsampling level) and each precision
(float32, mixed_bfloat16), on the study's real (or stand-in) training images:

- train images/s through cnnstudy's own training loop (seeded batches, shifts, callbacks),
  and through a bare ``model.fit`` of the same model on the same arrays: their ratio is the
  harness overhead;
- inference images/s;
- MFU: achieved FLOP/s (MACs per image x 2 forward, x 6 for a training step) over the
  device's peak for that precision.

Then the hot path, alternatives measured side by side (interleaved) in the same run: the
NaN check every batch (what a sweep does) against once an epoch, larger batches, and JAX's
persistent compilation cache (a trial that compiles everything against one that reads its
steps back). ``--sweep`` times a whole sweep of the study in a scratch store and adds its row
to the bench's csv. Results go to results/bench/gpu-<device>.{md,csv} (without a GPU, with
CNNSTUDY_BENCH_ANY_DEVICE=1: <machine>-<backend>-hotpath.{md,csv}).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from cnnstudy.bench import machine_name, scratch_store
from cnnstudy.core.study import Study, load_study
from cnnstudy.core.variants import Variant
from cnnstudy.nets.data import Splits, study_splits
from cnnstudy.tracking import device_description

STUDY = "experiments/cifar10_standin.toml"
PRECISIONS = ("float32", "mixed_bfloat16")
COLUMNS = [  # the columns first
    "backend",
    "study",
    "variant",
    "precision",
    "batch_size",
    "train_images_per_second",
    "mfu",
    "overhead_ratio",
    "section",
    "setting",
    "infer_images_per_second",
    "bare_train_images_per_second",
    "bare_mfu",
    "macs_per_image",
    "peak_tflops",
    "seconds",
    "note",
]

# Dense peak TFLOP/s per precision, from NVIDIA's data sheets. float32 is measured against
# the TF32 tensor-core peak: at JAX's default precision XLA runs float32 convolutions and
# matrix products in TF32 on these GPUs. Keys are the words of the device's name; a device
# not listed (or a MIG slice of one) gets no MFU (NaN), not a guess.
PEAKS = {
    ("h100", "pcie"): {"float32": 378.0, "mixed_bfloat16": 756.0},
    ("h100", "nvl"): {"float32": 417.5, "mixed_bfloat16": 835.5},
    ("h100",): {"float32": 494.7, "mixed_bfloat16": 989.4},  # SXM
    ("h200", "nvl"): {"float32": 417.5, "mixed_bfloat16": 835.5},
    ("h200",): {"float32": 494.7, "mixed_bfloat16": 989.4},  # SXM
    ("a100",): {"float32": 156.0, "mixed_bfloat16": 312.0},
    ("l4",): {"float32": 60.0, "mixed_bfloat16": 121.0},
    ("l40s",): {"float32": 183.0, "mixed_bfloat16": 362.0},
}


def peak_tflops(device: str, precision: str) -> float:
    """The device's dense peak for ``precision``; NaN when the device is not in PEAKS."""
    words = set(re.findall(r"[a-z0-9]+", device.lower()))
    if "mig" in words or "rtx" in words:
        return math.nan
    for key in sorted(PEAKS, key=len, reverse=True):  # ("h100", "pcie") before ("h100",)
        if set(key) <= words:
            return PEAKS[key][precision]
    return math.nan


def mfu(images_per_second: float, macs_per_image: float, peak: float, train: bool) -> float:
    """Model FLOP utilisation: 2 FLOPs per MAC forward, 3x that for forward + backward."""
    flops = images_per_second * macs_per_image * (6 if train else 2)
    return flops / (peak * 1e12)


def macs_per_image(study: Study, variant: Variant) -> float:
    from cnnstudy.nets.shapes import formula_table

    settings = study.settings({k: s.values[0] for k, s in study.nuisance.items()}, variant)
    rows = formula_table(variant, settings, study.input_shape, study.n_classes)
    return float(sum(r["macs"] for r in rows))


# ---------------------------------------------------------------- one measurement


def _model(
    study: Study, variant: Variant, precision: str, batch: int, n_train: int, lr: float = 0.0
):
    import keras

    from cnnstudy.nets.models import build_model, compile_model

    nuisance = {k: s.values[len(s.values) // 2] for k, s in study.nuisance.items()}
    if lr:
        nuisance["learning_rate"] = lr
    settings = {**study.settings(nuisance, variant), "precision": precision, "batch_size": batch}
    keras.utils.set_random_seed(0)
    model = build_model(variant, settings, study.input_shape, study.n_classes)
    return compile_model(model, settings, steps_per_epoch=-(-n_train // batch)), settings


def bare_rate(study: Study, variant: Variant, precision: str, batch: int, splits: Splits) -> float:
    """Steady-state train images/s of a bare ``model.fit`` on in-memory arrays: no callbacks
    but an epoch clock, no augmentation, Keras's own shuffling."""
    from cnnstudy.nets.training import _TrainClock

    n = len(splits.y_train)
    model, _ = _model(study, variant, precision, batch, n)
    clock = _TrainClock()
    model.fit(
        splits.x_train, splits.y_train, batch_size=batch, epochs=3, callbacks=[clock], verbose=0
    )
    return n * 2 / sum(clock.seconds[1:])  # epoch 1 compiles


def harness_rate(
    study: Study,
    variant: Variant,
    precision: str,
    batch: int,
    splits: Splits,
    nan_check: str = "batch",  # training.fit's default: what a sweep runs
) -> tuple[float, float]:
    """Steady-state train images/s through cnnstudy's training loop (as a sweep trains),
    and inference images/s on the test split."""
    from cnnstudy.nets import training

    model, settings = _model(study, variant, precision, batch, len(splits.y_train))
    fit = training.fit(
        model,
        splits,
        seed=0,
        epochs=3,
        batch_size=batch,
        augment_shift=settings["augment_shift"],
        nan_check=nan_check,
    )
    _, infer = training.timed_predict(model, splits.x_test, batch_size=256)
    return fit.train_images_per_second, infer


@contextmanager
def compilation_cache(jax_backend: bool, enabled: bool):  # noqa: ANN201
    """JAX's persistent compilation cache switched on or off inside the block."""
    if not jax_backend:
        yield
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", enabled)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
        cc.reset_cache()


def trial_seconds(study: Study, variant: Variant, splits: Splits, seed: int, lr: float) -> float:
    """A whole short trial as the sweep runs one: build, compile, 1 epoch, evaluate."""
    from cnnstudy.nets import training

    start = time.perf_counter()
    precision = study.fixed["precision"]
    batch = study.fixed["batch_size"]
    model, settings = _model(study, variant, precision, batch, len(splits.y_train), lr)
    training.fit(
        model,
        splits,
        seed=seed,
        epochs=1,
        batch_size=batch,
        augment_shift=settings["augment_shift"],
    )
    training.evaluate(model, splits.x_test, splits.y_test)
    return time.perf_counter() - start


def feed_rate(splits: Splits, batch: int, shift: int) -> float:
    """Images/s of cnnstudy's input pipeline alone (order, shifts, batching), no model:
    the most any training loop fed by it can reach on this host."""
    from cnnstudy.nets.training import SeededBatches

    batches = SeededBatches(splits.x_train, splits.y_train, batch, seed=0, shift=shift)
    start = time.perf_counter()
    for i in range(len(batches)):
        batches[i]
    return len(splits.y_train) / (time.perf_counter() - start)


# ---------------------------------------------------------------- the run


def run(
    study_path: str, limit: int = 0, variants: list[str] | None = None, repeats: int = 3
) -> pd.DataFrame:
    """Every section but the sweep. ``limit``/``variants`` shrink it (tests, a quick look)."""
    import keras

    from cnnstudy.cli import persist_jax_compilations

    sets = [f"study.limit={limit}"] if limit else []
    study = load_study(study_path, sets)
    chosen = [v for v in study.variants if not variants or v.name in variants]
    if not chosen:
        raise ValueError(f"no variant of {study_path} is named {variants}")
    device, backend = device_description(), keras.backend.backend()
    batch, shift = study.fixed["batch_size"], study.fixed["augment_shift"]
    print(f"loading {study.dataset} ...", flush=True)
    splits = study_splits(study)
    base = {"backend": backend, "study": study.name}
    rows: list[dict] = []
    with scratch_store():  # a fresh JAX compilation cache: the cold trial below is cold
        if backend == "jax":
            persist_jax_compilations()
        first = chosen[0]
        print(f"1/3 compilation: trials that compile or read back, {first.name} ...", flush=True)
        trial_seconds(study, first, splits, seed=0, lr=1e-3)  # the process's own first use
        cold, warm = [], []
        for k in range(repeats):
            lr = 2e-3 * (k + 1)
            with compilation_cache(backend == "jax", enabled=False):  # as every trial was
                cold.append(trial_seconds(study, first, splits, seed=0, lr=lr))
            trial_seconds(study, first, splits, seed=0, lr=lr)  # compiles and stores
            warm.append(trial_seconds(study, first, splits, seed=1, lr=lr))  # reads back
        cold, warm = min(cold), min(warm)  # best of: the machine's noise only slows a run
        rows += [
            {
                **base,
                "section": "hot path",
                "variant": first.name,
                "setting": s,
                "seconds": t,
                "precision": study.fixed["precision"],
                "batch_size": batch,
                "note": f"one trial (build, compile, 1 epoch, evaluate); best of {repeats}",
            }
            for s, t in (("trial, compiled (before)", cold), ("trial, cache read (after)", warm))
        ]
        rows.append(
            {
                **base,
                "section": "hot path",
                "setting": "input pipeline alone",
                "batch_size": batch,
                "train_images_per_second": feed_rate(splits, batch, shift),
                "note": f"SeededBatches, shift {shift}, no model",
            }
        )
        total = len(chosen) * len(PRECISIONS)
        for i, (precision, variant) in enumerate((p, v) for p in PRECISIONS for v in chosen):
            print(f"2/3 throughput {i + 1}/{total}: {variant.name} {precision} ...", flush=True)
            macs = macs_per_image(study, variant)
            peak = peak_tflops(device, precision)
            bare = bare_rate(study, variant, precision, batch, splits)
            train, infer = harness_rate(study, variant, precision, batch, splits)
            rows.append(
                {
                    **base,
                    "section": "throughput",
                    "variant": variant.name,
                    "precision": precision,
                    "batch_size": batch,
                    "train_images_per_second": train,
                    "mfu": mfu(train, macs, peak, True),
                    "overhead_ratio": bare / train,
                    "infer_images_per_second": infer,
                    "bare_train_images_per_second": bare,
                    "bare_mfu": mfu(bare, macs, peak, True),
                    "macs_per_image": macs,
                    "peak_tflops": peak,
                }
            )
        print(f"3/3 per-batch NaN check and batch size, {first.name} ...", flush=True)
        fast = "mixed_bfloat16"
        setups = {
            "NaN check every batch (now)": (batch, "batch"),
            "NaN check every epoch (candidate)": (batch, "epoch"),
            **{f"batch {b}": (b, "batch") for b in (2 * batch, 4 * batch)},
        }
        rates: dict[str, list[float]] = {label: [] for label in setups}
        for _ in range(repeats):  # interleaved, so the machine's drift hits every setup alike
            for label, (size, check) in setups.items():
                rate, _ = harness_rate(study, first, fast, size, splits, nan_check=check)
                rates[label].append(rate)
        for label, (size, _) in setups.items():
            rows.append(_hot(base, first, fast, size, label, max(rates[label]), study, repeats))
    if backend == "jax":
        persist_jax_compilations()  # back to the state dir's cache (the scratch one is gone)
    return pd.DataFrame(rows, columns=COLUMNS)


def _hot(
    base: dict,
    variant: Variant,
    precision: str,
    batch: int,
    label: str,
    rate: float,
    study: Study,
    repeats: int,
) -> dict:
    macs = macs_per_image(study, variant)
    peak = peak_tflops(device_description(), precision)
    return {
        **base,
        "section": "hot path",
        "variant": variant.name,
        "precision": precision,
        "batch_size": batch,
        "setting": label,
        "train_images_per_second": rate,
        "mfu": mfu(rate, macs, peak, True),
        "macs_per_image": macs,
        "peak_tflops": peak,
        "note": f"best of {repeats}, interleaved",
    }


def sweep_row(study_path: str, sets: list[str], workers: int = 0) -> dict:
    """A whole sweep of the study (``cnnstudy sweep``) in a scratch store, timed, with the
    number of trials that finished read back from that store."""
    import keras
    import mlflow

    study = load_study(study_path, sets)
    args = [x for s in sets for x in ("--set", s)] + (
        ["--workers", str(workers)] if workers else []
    )
    with scratch_store() as tmp:
        cmd = [sys.executable, "-m", "cnnstudy.cli", "sweep", str(Path(study_path).absolute())]
        start = time.perf_counter()
        proc = subprocess.run(
            [*cmd, *args], cwd=tmp, env=dict(os.environ), capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        # that store by its own URI: the process may have set another with set_tracking_uri
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        experiment = client.get_experiment_by_name(study.name)
        runs = (
            client.search_runs([experiment.experiment_id], max_results=50000) if experiment else []
        )
    trials = [r for r in runs if r.data.tags.get("cnnstudy.kind") == "trial"]
    finished = sum(r.info.status == "FINISHED" for r in trials)
    note = f"{finished}/{study.n_trials} trials finished"
    if proc.returncode != 0:
        note += f"; exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return {
        "backend": keras.backend.backend(),
        "study": study.name,
        "section": "sweep",
        "setting": " ".join(args) or "as the study file",
        "seconds": seconds,
        "precision": study.fixed["precision"],
        "batch_size": study.fixed["batch_size"],
        "note": note,
    }


def render(df: pd.DataFrame, name: str) -> str:
    from cnnstudy.report.builder import markdown_table
    from cnnstudy.tracking import package_versions

    def table(part: pd.DataFrame, cols: list[str], digits: int = 3) -> str:
        part = part[[c for c in cols if c in part and part[c].notna().any()]]
        return markdown_table(part.round(digits)) if len(part) else "(not run)"

    tp = df[df["section"] == "throughput"]
    hot = df[df["section"] == "hot path"]
    sweep = df[df["section"] == "sweep"]
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    lines = [
        f"# cnnstudy GPU bench: {name}",
        "",
        f"Generated by `make bench-gpu` on {device_description()} ({versions}). Do not edit.",
        "",
        "MFU = train images/s x MACs per image x 6 (forward 2, backward 4) over the device's "
        "dense peak for the precision (float32: the TF32 tensor-core peak). "
        "overhead_ratio = bare `model.fit` images/s over cnnstudy's training loop images/s "
        "(same model and arrays; the harness adds seeded batches with shifts, validation "
        "and its callbacks; 1.0 = no overhead).",
        "",
        "## Throughput per variant and precision",
        "",
        "Inference images/s are measured at batch 256 on the test split.",
        "",
        table(tp, [c for c in COLUMNS if c not in ("backend", "study", "section", "setting")]),
        "",
        "## Hot path: before and after, in this run",
        "",
        table(
            hot,
            [
                "setting",
                "variant",
                "precision",
                "batch_size",
                "train_images_per_second",
                "mfu",
                "seconds",
                "note",
            ],
        ),
        "",
        *_ratios(df),
        "",
        "## Whole sweep",
        "",
        table(sweep, ["study", "setting", "precision", "batch_size", "seconds", "note"], 1),
        "",
    ]
    return "\n".join(lines)


def _ratios(df: pd.DataFrame) -> list[str]:
    """The before/after ratios, each from rows of this run."""
    hot = df[df["section"] == "hot path"].set_index("setting")
    tp = df[df["section"] == "throughput"]
    out = []

    def get(label: str, col: str) -> float:
        return float(hot.loc[label, col]) if label in hot.index else math.nan

    pairs = [
        (
            "per-epoch / per-batch NaN check, train images/s",
            get("NaN check every epoch (candidate)", "train_images_per_second")
            / get("NaN check every batch (now)", "train_images_per_second"),
        ),
        (
            "compiled trial / cache-read trial, seconds",
            get("trial, compiled (before)", "seconds")
            / get("trial, cache read (after)", "seconds"),
        ),
    ]
    if len(tp):
        by = tp.pivot_table(index="variant", columns="precision", values="train_images_per_second")
        if set(PRECISIONS) <= set(by.columns):
            ratio = by["mixed_bfloat16"] / by["float32"]
            pairs.append(
                (
                    "mixed_bfloat16 / float32, train images/s (median over variants)",
                    float(ratio.median()),
                )
            )
    base = hot.loc["NaN check every batch (now)"] if len(hot) else None
    for label, row in hot[hot.index.str.startswith("batch ")].iterrows():
        pairs.append(
            (
                f"{label} / batch {int(base['batch_size'])}, train images/s",
                float(row["train_images_per_second"] / base["train_images_per_second"]),
            )
        )
    for label, value in pairs:
        if np.isfinite(value):
            out.append(f"- {label}: **{value:.2f}x**")
    return out


def bench_name() -> str:
    """gpu-<device>; on a CPU (CNNSTUDY_BENCH_ANY_DEVICE) <cpu>-<backend>-hotpath, so the
    CPU's `make bench` files stay as they are."""
    import keras

    name = machine_name()
    return name if name.startswith("gpu-") else f"{name}-{keras.backend.backend()}-hotpath"


def write(df: pd.DataFrame, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = bench_name()
    df.to_csv(out_dir / f"{name}.csv", index=False, float_format="%.6g")
    (out_dir / f"{name}.md").write_text(render(df, name))
    return out_dir / f"{name}.md"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cnnstudy.bench_gpu", description=__doc__)
    parser.add_argument("study", nargs="?", default=STUDY)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="time a whole sweep of the study and add it to the bench files",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="passed to the sweep, as in `cnnstudy sweep --set`",
    )
    parser.add_argument("--workers", type=int, default=0, help="sweep with n workers")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args(argv)
    if not machine_name().startswith("gpu-") and not os.environ.get("CNNSTUDY_BENCH_ANY_DEVICE"):
        print(
            f"bench-gpu: no GPU is visible to Keras's {os.environ.get('KERAS_BACKEND')} backend "
            f"(device: {device_description()}). On a GPU machine: KERAS_BACKEND=jax with "
            "jax[cuda12], or TensorFlow with CUDA; see the README's 'CIFAR-10 on a GPU'. "
            "(CNNSTUDY_BENCH_ANY_DEVICE=1 runs it anyway.)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    csv = out / f"{bench_name()}.csv"
    if args.sweep:
        old = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=COLUMNS)
        print(f"timing a whole sweep of {args.study} {' '.join(args.set)} ...", flush=True)
        row = sweep_row(args.study, args.set, args.workers)
        df = pd.concat([old[old["section"] != "sweep"], pd.DataFrame([row])], ignore_index=True)
    else:
        old = pd.read_csv(csv) if csv.exists() else None
        df = run(args.study)
        if old is not None:  # keep an earlier sweep of the same backend and study
            same = (old["backend"] == df["backend"].iloc[0]) & (old["study"] == df["study"].iloc[0])
            df = pd.concat([df, old[(old["section"] == "sweep") & same]], ignore_index=True)
    path = write(df[COLUMNS], out)
    print(render(df, bench_name()))
    print(f"wrote {path} and .csv")
    return 0


if __name__ == "__main__":
    from cnnstudy.cli import import_backend_quietly, quiet_frameworks

    quiet_frameworks()
    import_backend_quietly()
    sys.exit(main())
