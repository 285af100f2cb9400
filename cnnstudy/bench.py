"""`make bench`: harness overhead, a whole trial and throughput per backend, sweep scaling.

Everything is measured side by side in one run, and the ratios are printed last. Results go
to results/bench/<machine>.{md,csv}.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd

from cnnstudy.core.study import Study, load_study
from cnnstudy.nets.data import Splits, study_splits

BACKENDS = ("tensorflow", "jax", "torch")


@contextmanager
def scratch_store():
    """A throw-away MLflow store and tuner state, so the bench never touches the user's."""
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "CNNSTUDY_STATE_DIR")}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["CNNSTUDY_STATE_DIR"] = f"{tmp}/state"
        try:
            yield Path(tmp)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _splits(study: Study) -> Splits:
    return study_splits(study)


# ---------------------------------------------------------------- 1. harness overhead


def bare_trial(study: Study, splits: Splits, nuisance: dict) -> float:
    """model.fit + evaluate of the same model, data, epochs and batch size: the baseline."""
    import keras

    from cnnstudy.nets.models import build_model, compile_model

    variant = study.variants[0]
    settings = study.settings(nuisance, variant)
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = compile_model(
        build_model(variant, settings, splits.input_shape, study.n_classes), settings
    )
    model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=settings["batch_size"],
        epochs=settings["epochs"],
        validation_data=(splits.x_val, splits.y_val),
        shuffle=True,
        verbose=0,
    )
    model.evaluate(splits.x_test, splits.y_test, verbose=0)
    return time.perf_counter() - start


def harness_trial(study: Study, splits: Splits, nuisance: dict) -> float:
    """One replicate trial through cnnstudy: keras-tuner, MLflow logging, probes."""
    from cnnstudy.run.sweep import Sweep
    from cnnstudy.tracking import SweepTracker

    # a fresh sweep (parent run, keras-tuner project) for each repetition; the store exists
    tracker, _ = SweepTracker.open(study.name, "bench", new=True)
    sweep = Sweep(study, splits, tracker, quiet=True)
    start = time.perf_counter()
    sweep.replicate({study.variants[0].name: nuisance})
    return time.perf_counter() - start


def overhead(study: Study, repeats: int = 3) -> dict:
    from cnnstudy.tracking import SweepTracker

    splits = _splits(study)
    nuisance = {k: s.values[len(s.values) // 2] for k, s in study.nuisance.items()}
    with scratch_store():
        SweepTracker.open(study.name, "bench")  # creating the store is per sweep, not per trial
        bare, harness = [], []
        bare_trial(study, splits, nuisance)  # warm-up: imports, first graph compilation
        for _ in range(repeats):  # interleaved, so drift hits both alike
            bare.append(bare_trial(study, splits, nuisance))
            harness.append(harness_trial(study, splits, nuisance))
    b, h = statistics.median(bare), statistics.median(harness)
    return {
        "bare_seconds": b,
        "harness_seconds": h,
        "overhead_ratio": h / b,
        "bare_all": bare,
        "harness_all": harness,
    }


# ---------------------------------------------------------------- 2. throughput


def throughput(study: Study, n_images: int | None = None, repeats: int = 3) -> list[dict]:
    """Train and inference images/s of every variant on random inputs of the study's shape."""
    if n_images is None:  # about a second per timed epoch on a laptop CPU
        n_images = 2048 if np.prod(study.input_shape) <= 1024 else 384
    import keras

    from cnnstudy.nets.models import build_model, compile_model
    from cnnstudy.nets.training import timed_predict

    rng = np.random.default_rng(0)
    x = rng.random((n_images, *study.input_shape), dtype=np.float32)
    y = rng.integers(0, study.n_classes, n_images)
    first = {k: s.values[0] for k, s in study.nuisance.items()}
    batch = study.settings(first)["batch_size"]
    rows = []
    for variant in study.variants:
        settings = study.settings(first, variant)
        keras.utils.set_random_seed(0)
        model = build_model(variant, settings, study.input_shape, study.n_classes)
        compile_model(model, settings)
        model.fit(x[: 4 * batch], y[: 4 * batch], batch_size=batch, epochs=1, verbose=0)  # compile
        times = []
        for _ in range(repeats):  # best of: the VM's noise only ever slows a run down
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            times.append(time.perf_counter() - start)
        train_rate = n_images / min(times)
        infer_rate = max(timed_predict(model, x)[1] for _ in range(repeats))
        rows.append(
            {
                "section": "throughput",
                "backend": keras.backend.backend(),
                "study": study.name,
                "variant": variant.name,
                "input_shape": "x".join(map(str, study.input_shape)),
                "batch_size": batch,
                "train_images_per_second": train_rate,
                "infer_images_per_second": infer_rate,
            }
        )
    return rows


BACKENDS_VENV = Path(".venv-backends/bin/python")  # made by `make test-backends`


def backend_pythons() -> dict[str, str]:
    """For each backend, an interpreter that has it: this one, or .venv-backends's."""
    out = {}
    for backend in BACKENDS:
        if find_spec(backend) is not None:
            out[backend] = sys.executable
        elif (
            BACKENDS_VENV.exists()
            and subprocess.run(
                [str(BACKENDS_VENV), "-c", f"import {backend}"], capture_output=True
            ).returncode
            == 0
        ):
            out[backend] = str(BACKENDS_VENV)
    return out


def installed_backends() -> list[str]:
    return list(backend_pythons())


def throughput_all_backends(studies: list[str]) -> list[dict]:
    """One subprocess per installed backend (Keras fixes its backend at import)."""
    rows = []
    for backend, python in backend_pythons().items():
        # every trial compiles, as it did before the JAX cache (whole_trial repeats one)
        env = {**os.environ, "KERAS_BACKEND": backend, "CNNSTUDY_JAX_CACHE": "0"}
        proc = subprocess.run(
            [python, "-m", "cnnstudy.bench", "--throughput-json", *studies],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            rows.append(
                {
                    "section": "throughput",
                    "backend": backend,
                    "note": f"failed: {proc.stderr.strip().splitlines()[-1:]}",
                }
            )
            continue
        rows += json.loads(proc.stdout.strip().splitlines()[-1])
    return rows


def whole_trial(study: Study, repeats: int = 3) -> list[dict]:
    """What a sweep pays per trial on this backend: a fresh model built, compiled (traced),
    fitted for the study's epochs on its real data and evaluated. Steady-state images/s
    (above) leaves out the per-model tracing a sweep of many short trials pays each time."""
    import keras

    splits = _splits(study)
    nuisance = {k: s.values[len(s.values) // 2] for k, s in study.nuisance.items()}
    bare_trial(study, splits, nuisance)  # warm-up: imports and the backend's first kernels
    times = [bare_trial(study, splits, nuisance) for _ in range(repeats)]
    return [
        {
            "section": "trial",
            "backend": keras.backend.backend(),
            "study": study.name,
            "variant": study.variants[0].name,
            "seconds": statistics.median(times),
            "note": f"median of {repeats}; {min(times):.2f}-{max(times):.2f}s",
        }
    ]


# ---------------------------------------------------------------- 3. scaling


def scaling(base: Study, multiples: tuple[int, ...] = (1, 2, 4)) -> list[dict]:
    """Sweep wall time as trials grow; data is loaded once, outside the timed part."""
    from cnnstudy.run.sweep import Sweep
    from cnnstudy.tracking import SweepTracker

    start = time.perf_counter()
    splits = _splits(base)
    load_seconds = time.perf_counter() - start
    rows = []
    for m in multiples:
        study = load_study(base.path, [*SCALING_SET, f"study.seeds={m * 2 - 1}"])
        with scratch_store():
            tracker, _ = SweepTracker.open(study.name, f"scale{m}")
            sweep = Sweep(study, splits, tracker, quiet=True)
            start = time.perf_counter()
            sweep.run()
            seconds = time.perf_counter() - start
        trials = study.n_trials
        rows.append(
            {
                "section": "scaling",
                "backend": _backend(),
                "study": study.name,
                "trials": trials,
                "seconds": seconds,
                "seconds_per_trial": seconds / trials,
                "data_load_seconds": load_seconds,
            }
        )
    return rows


SCALING_SET = [
    "study.budget=1",
    "study.limit=1000",
    "fixed.epochs=1",
    "fixed.warmup_epochs=0",  # a 1-epoch run has no room for the study's warm-up
    "study.tune_epochs=0",
    "scientific.paddings=['same']",
    "scientific.downsamplings=['maxpool','stride']",
]


def _backend() -> str:
    import keras

    return keras.backend.backend()


# ---------------------------------------------------------------- 4. distributed


def distributed_walltime(study_path: str, workers: tuple[int, ...] = (1, 2)) -> list[dict]:
    """The same small sweep with 1 and with 2 workers: whole-command wall time."""
    rows = []
    for n in workers:
        with scratch_store() as tmp:
            (tmp / "experiments").mkdir()
            (tmp / "experiments/study.toml").write_text(Path(study_path).read_text())
            cmd = [
                sys.executable,
                "-m",
                "cnnstudy.cli",
                "sweep",
                "experiments/study.toml",
                *(x for s in DISTRIBUTED_SET for x in ("--set", s)),
                "--workers",
                str(n),
            ]
            start = time.perf_counter()
            proc = subprocess.run(
                cmd, cwd=tmp, env=dict(os.environ), capture_output=True, text=True
            )
            seconds = time.perf_counter() - start
        trials = next((ln for ln in proc.stdout.splitlines() if "trials finished" in ln), "")
        rows.append(
            {
                "section": "distributed",
                "backend": _backend(),
                "study": "smoke-like",
                "workers": n,
                "seconds": seconds,
                "note": trials.strip() or proc.stderr[-200:],
            }
        )
    return rows


DISTRIBUTED_SET = [
    "study.name=distbench",
    "study.limit=1000",
    "study.seeds=2",
    "study.budget=1",
    "fixed.epochs=2",
    "study.tune_epochs=0",  # tuning trials as long as the replicates
]


# ---------------------------------------------------------------- the run


def machine_name() -> str:
    from cnnstudy.tracking import device_description

    device = device_description()
    if device.startswith("cpu"):
        return f"cpu-{os.cpu_count()}core-{platform.machine()}"
    return "gpu-" + "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")[:40]


def run_bench(study_path: str, out_dir: Path, repeats: int = 5) -> pd.DataFrame:
    one = load_study(
        study_path,
        ["study.seeds=1", "scientific.paddings=['same']", "scientific.downsamplings=['maxpool']"],
    )
    print(
        f"1/4 harness overhead: one replicate trial of {one.variants[0].name}, "
        f"{repeats} interleaved repeats ...",
        flush=True,
    )
    ov = overhead(one, repeats)
    rows = [
        {
            "section": "overhead",
            "backend": _backend(),
            "study": one.name,
            "variant": one.variants[0].name,
            "trials": 1,
            "seconds": ov["harness_seconds"],
            "bare_seconds": ov["bare_seconds"],
            "overhead_ratio": ov["overhead_ratio"],
            "note": "median of {}; harness {:.2f}-{:.2f}s, bare {:.2f}-{:.2f}s".format(
                repeats,
                min(ov["harness_all"]),
                max(ov["harness_all"]),
                min(ov["bare_all"]),
                max(ov["bare_all"]),
            ),
        }
    ]
    print(
        f"2/4 throughput per variant, backends: {', '.join(installed_backends())} ...", flush=True
    )
    rows += throughput_all_backends([study_path, "experiments/cifar10.toml"])
    print("3/4 scaling: sweep wall time at 1x, 2x, 4x the trials ...", flush=True)
    rows += scaling(load_study(study_path))
    print("4/4 distributed: the same sweep with 1 and 2 workers ...", flush=True)
    rows += distributed_walltime(study_path)
    df = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = machine_name()
    df.to_csv(out_dir / f"{name}.csv", index=False, float_format="%.6g")
    (out_dir / f"{name}.md").write_text(render_markdown(df, name))
    return df


def render_markdown(df: pd.DataFrame, name: str) -> str:
    from cnnstudy.report.builder import markdown_table
    from cnnstudy.tracking import device_description, package_versions

    ov = df[df["section"] == "overhead"].iloc[0]
    tp = df[df["section"] == "throughput"].dropna(axis=1, how="all")
    trial = backend_trials(df)
    sc = df[df["section"] == "scaling"]
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    lines = [
        f"# cnnstudy bench: {name}",
        "",
        f"Generated by `make bench` on {device_description()} ({versions}). Do not edit.",
        "",
        "## Harness overhead",
        "",
        f"One replicate trial through cnnstudy (keras-tuner + MLflow + probes) against a bare "
        f"`model.fit` + `evaluate` of the same model, data, epochs and batch size, in the same "
        f"process: **overhead_ratio = {ov['overhead_ratio']:.3f}** "
        f"({ov['seconds']:.2f}s vs {ov['bare_seconds']:.2f}s; {ov['note']}).",
        "",
        "## Backends: one whole trial",
        "",
        f"A fresh `{trial['variant'].iloc[0] if len(trial) else ''}` model built, compiled, "
        "fitted for the study's epochs on its data and evaluated, in each backend's own process "
        f"(this run's backend is `{_backend()}`; ratio = seconds / its seconds). "
        "This is what a sweep of many short trials pays; the throughput table below is the "
        "steady state, without the per-model tracing.",
        "",
        markdown_table(trial[["backend", "seconds", "ratio", "note"]].round(2))
        if len(trial)
        else "(no backend ran)",
        "",
        "## Throughput (images/s, random inputs, batch size of the study)",
        "",
        markdown_table(
            tp.drop(
                columns=[
                    c
                    for c in (
                        "section",
                        "trials",
                        "seconds",
                        "note",
                        "overhead_ratio",
                        "bare_seconds",
                        "seconds_per_trial",
                        "data_load_seconds",
                    )
                    if c in tp
                ]
            ).round(0)
        ),
        "",
        "## Scaling (sweep wall time as trials grow; data loaded once)",
        "",
        markdown_table(
            sc[["trials", "seconds", "seconds_per_trial", "data_load_seconds"]].round(2)
        ),
        "",
        f"seconds per trial at 4x / at 1x: "
        f"{sc['seconds_per_trial'].iloc[-1] / sc['seconds_per_trial'].iloc[0]:.2f} (1.00 = linear)",
        "",
        "## Distributed (keras-tuner chief + workers, MLflow server; whole command)",
        "",
        markdown_table(df[df["section"] == "distributed"][["workers", "seconds", "note"]].round(1)),
        "",
        "On a 2-core machine the workers share the cores that one Keras process already "
        "uses, so more workers add start-up cost (a server, a chief, one backend per worker) "
        "without adding compute. The mode pays off across machines or GPUs.",
        "",
    ]
    return "\n".join(lines)


def backend_trials(df: pd.DataFrame) -> pd.DataFrame:
    """The whole-trial rows, with each backend's seconds over this run's backend's."""
    trial = df[df["section"] == "trial"].copy()
    mine = trial[trial["backend"] == _backend()]["seconds"]
    trial["ratio"] = trial["seconds"] / mine.iloc[0] if len(mine) else float("nan")
    return trial.sort_values("seconds")


def short_table(df: pd.DataFrame) -> str:
    ov = df[df["section"] == "overhead"].iloc[0]
    out = [f"overhead_ratio (harness / bare fit+evaluate): {ov['overhead_ratio']:.3f}"]
    trial = backend_trials(df)
    if len(trial):
        out.append(
            f"one whole trial, seconds (x {_backend()}): "
            + ", ".join(
                f"{b} {s:.2f} ({r:.2f}x)"
                for b, s, r in zip(trial["backend"], trial["seconds"], trial["ratio"], strict=True)
            )
        )
    tp = df[(df["section"] == "throughput") & df.get("variant", pd.Series()).notna()]
    for (backend, study), g in tp.groupby(["backend", "study"]):
        out.append(
            f"{backend:<10} {study:<8} train img/s "
            + ", ".join(
                f"{v}={r:,.0f}"
                for v, r in zip(g["variant"], g["train_images_per_second"], strict=True)
            )
        )
    sc = df[df["section"] == "scaling"]
    per_trial = zip(sc["trials"], sc["seconds_per_trial"], strict=True)
    out.append("scaling s/trial: " + ", ".join(f"{int(t)} trials={s:.2f}" for t, s in per_trial))
    dist = df[df["section"] == "distributed"]
    walls = zip(dist["workers"], dist["seconds"], strict=True)
    out.append("distributed: " + ", ".join(f"{int(w)} worker(s) {s:.0f}s" for w, s in walls))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--throughput-json":  # the per-backend subprocess
        rows = whole_trial(load_study(argv[1]))
        rows += [r for path in argv[1:] for r in throughput(load_study(path))]
        print(json.dumps(rows))
        return 0
    study = argv[0] if argv else "experiments/default.toml"
    df = run_bench(study, Path("results/bench"))
    print("\n" + short_table(df))
    print(f"\nwrote results/bench/{machine_name()}.md and .csv")
    return 0


if __name__ == "__main__":
    from cnnstudy.cli import import_backend_quietly, quiet_frameworks

    quiet_frameworks()
    import_backend_quietly()
    sys.exit(main())
