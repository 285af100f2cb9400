"""The two-stage sweep, both stages on keras-tuner.

1. tune: a keras-tuner GridSearch over variant x nuisance grid, scored on the
   validation split, at the study's ``tune_seed``. Every variant gets the same grid.
2. replicate: a GridSearch over variant x seed, each variant at its best nuisance
   values, evaluated once on the held-out test split.

keras-tuner's on-disk state makes a re-run finish only the missing trials; the
``cnnstudy.trial_key`` tag makes MLflow agree with it.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np

from cnnstudy.core.datasets import REGISTRY
from cnnstudy.core.study import Study
from cnnstudy.core.variants import variants
from cnnstudy.nets import probes, training
from cnnstudy.nets.data import Splits
from cnnstudy.nets.models import build_model, compile_model
from cnnstudy.nets.shapes import variant_table
from cnnstudy.run import roles
from cnnstudy.run.trialplot import learning_curve_image
from cnnstudy.tracking import SweepTracker

TUNE, REPLICATE = "tune", "replicate"
OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")


def state_root() -> Path:
    import os

    return Path(os.environ.get("CNNSTUDY_STATE_DIR", ".cnnstudy")) / "tuner"


# ---------------------------------------------------------------- progress


@dataclass
class Progress:
    """One line per finished trial, with elapsed time and an ETA from this run's pace."""

    total: int
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    ran_here: int = 0
    stream: Any = sys.stdout
    work: int = 0  # epochs over all trials: the ETA weighs a trial by its epochs
    work_done: int = 0
    work_here: int = 0

    def skip(self, n: int, epochs: int = 1) -> None:
        self.done += n
        self.work_done += n * epochs

    def trial(
        self, stage: str, variant: str, detail: str, result: str, seconds: float, epochs: int = 1
    ) -> None:
        self.done += 1
        self.ran_here += 1
        self.work_done += epochs
        self.work_here += epochs
        if self.stream is None:  # quiet (the benchmark)
            return
        elapsed = time.perf_counter() - self.started
        if roles.role() == "worker":  # counts and ETAs are the chief's business
            print(
                f"[{roles.tuner_id()} #{self.ran_here}] {stage:<9} {variant:<14} "
                f"{detail:<22} {result:<22} {seconds:5.1f}s",
                file=self.stream,
                flush=True,
            )
            return
        # by epochs, not trials: tuning trials may be shorter than replicates
        eta = elapsed / max(self.work_here, 1) * max(self.work - self.work_done, 0)
        width = len(str(self.total))
        print(
            f"[{self.done:>{width}}/{self.total}] {stage:<9} {variant:<14} {detail:<22} "
            f"{result:<22} {seconds:5.1f}s  elapsed {_mmss(elapsed)}  eta {_mmss(eta)}",
            file=self.stream,
            flush=True,
        )


def _mmss(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _fmt(values: dict[str, Any]) -> str:
    return " ".join(f"{k.replace('learning_rate', 'lr')}={v:.3g}" for k, v in values.items())


# ---------------------------------------------------------------- keras-tuner glue


class StudyTuner(keras_tuner.GridSearch):
    """GridSearch whose trials are run by the sweep (our own fit loop + MLflow logging)."""

    def __init__(self, sweep: Sweep, stage: str, hyperparameters, **kwargs):
        self.sweep, self.stage = sweep, stage
        super().__init__(
            hyperparameters=hyperparameters,
            objective=OBJECTIVE,
            tune_new_entries=False,
            allow_new_entries=False,
            # A failed trial (NaN loss, error) must not stop the study.
            max_consecutive_failed_trials=10**6,
            **kwargs,
        )

        _repair_grid_cursor(self.oracle)

    def run_trial(self, trial, *args, **kwargs):  # noqa: ANN001, ANN201
        return self.sweep.run_trial(self.stage, trial)


def _repair_grid_cursor(oracle) -> None:  # noqa: ANN001
    """Work around keras-tuner 1.4.8: GridSearchOracle keeps its place in the grid
    (``_ordered_ids``, ``_populate_next``) in memory only, so after a reload the first
    trial that ends makes the next ``create_trial`` fail with a KeyError. Rebuild both
    from the reloaded trials, in grid order, as if the search had never stopped."""
    cursor = getattr(oracle, "_ordered_ids", None)
    if cursor is None or cursor._memory or not oracle.trials:  # a worker's client, or fresh
        return
    trials = oracle.trials
    order = sorted(
        trials,
        key=functools.cmp_to_key(
            lambda a, b: oracle._compare(
                trials[a].hyperparameters.values, trials[b].hyperparameters.values
            )
        ),
    )
    for trial_id in order:
        cursor.insert(trial_id)
    oracle._populate_next = list(order)


def _finished_count(tuner: keras_tuner.Tuner) -> int:
    if roles.role() == "worker":  # the chief's oracle holds the count
        return 0
    done = ("COMPLETED", "FAILED")
    return sum(1 for t in tuner.oracle.trials.values() if t.status in done)


def best_per_variant(tuner: keras_tuner.Tuner, nuisance: list[str]) -> dict[str, dict[str, Any]]:
    """For each variant, the grid point with the best mean validation accuracy over its
    tuning seeds (a failed seed's run is left out of its point's mean)."""
    scores: dict[tuple[str, tuple], list[float]] = {}
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED" or trial.score is None or np.isnan(trial.score):
            continue
        values = trial.hyperparameters.values
        point = tuple((k, values[k]) for k in nuisance)
        scores.setdefault((values["variant"], point), []).append(trial.score)
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for (name, point), values in scores.items():
        mean = float(np.mean(values))
        if name not in best or mean > best[name][0]:
            best[name] = (mean, dict(point))
    return {name: v for name, (_, v) in best.items()}


# ---------------------------------------------------------------- the sweep


class Sweep:
    def __init__(self, study: Study, splits: Splits, tracker: SweepTracker, quiet: bool = False):
        self.study, self.splits, self.tracker = study, splits, tracker
        self.directory = state_root() / study.name / tracker.sweep_id
        self.role = roles.role()  # None, "chief" or "worker"
        if self.role == "worker":  # a worker's own keras-tuner files; the oracle is the chief's
            self.directory = self.directory / roles.tuner_id()
        self.best: dict[str, dict[str, Any]] = {}
        f = study.fixed
        self.probe_set = probes.build_probe_set(
            splits.x_test,
            splits.y_test,
            k=f["probe_shift"],
            seed=f["probe_seed"],
            # a flatten head ties weights to the input size; clutter has no clean content box
            border=f["head"] == "gap" and REGISTRY[study.dataset].plain_background,
        )
        # Everything the trained model is scored on, predicted in one pass: the test split,
        # a fixed training sample the size of the test split (for train accuracy), the probes.
        rng = np.random.default_rng(f["probe_seed"])
        n_test = len(splits.y_test)
        sample = rng.choice(len(splits.y_train), min(n_test, len(splits.y_train)), replace=False)
        self.train_sample_y = splits.y_train[sample]
        parts = [splits.x_test, splits.x_train[sample], *self.probe_set.inputs()]
        self.eval_bounds = np.cumsum([0, *(len(p) for p in parts)])
        self.eval_inputs = np.concatenate(parts)
        self.progress = Progress(
            total=study.n_trials, stream=None if quiet else sys.stdout, work=study.n_epochs
        )

    # -- stages
    def _tuner(self, stage: str, hp: keras_tuner.HyperParameters) -> StudyTuner:
        return StudyTuner(
            self, stage, hp, directory=str(self.directory), project_name=stage, overwrite=False
        )

    def tune_space(self) -> keras_tuner.HyperParameters:
        hp = keras_tuner.HyperParameters()
        hp.Choice("variant", [v.name for v in self.study.variants])
        for name, spec in self.study.nuisance.items():
            hp.Choice(name, list(spec.values))
        hp.Choice("tune_seed", self.study.tune_seed_list)
        return hp

    def replicate_space(self, variants: list[str]) -> keras_tuner.HyperParameters:
        hp = keras_tuner.HyperParameters()
        hp.Choice("variant", variants)
        hp.Choice("seed", self.study.seed_list)
        return hp

    def run(self) -> dict[str, dict[str, Any]]:
        if self.role:
            roles.stage_port(0)
        tuner = self._tuner(TUNE, self.tune_space())
        self.progress.skip(_finished_count(tuner), self.study.trial_epochs(tuning=True))
        tuner.search(verbose=0)
        if self.role == "worker":
            self.best = roles.wait_for_best(self.tracker)
        else:
            self.best = best_per_variant(tuner, list(self.study.nuisance))
            self._report_untuned()
            self.tracker.log_json(
                self.tracker.parent_run_id, self.best, "tuning/best_nuisance.json"
            )
            if self.role == "chief":
                roles.publish_best(self.tracker, self.best)
        self.replicate(self.best)
        return self.best

    def replicate(self, best: dict[str, dict[str, Any]]) -> None:
        """Stage 2: every variant that has a best setting, at that setting, with every seed."""
        self.best = best
        names = [v.name for v in self.study.variants if v.name in best]
        if not names:
            return
        if self.role:
            roles.stage_port(1)
        rep = self._tuner(REPLICATE, self.replicate_space(names))
        self.progress.skip(_finished_count(rep), self.study.trial_epochs(tuning=False))
        rep.search(verbose=0)

    def _report_untuned(self) -> None:
        for v in self.study.variants:
            if v.name not in self.best:
                skipped = self.study.seeds
                self.progress.total -= skipped
                self.progress.work -= skipped * self.study.trial_epochs(tuning=False)
                print(
                    f"warning: every tuning trial of {v.name} failed; it is not replicated. "
                    "See the FAILED runs in MLflow (tag cnnstudy.failure).",
                    file=sys.stderr,
                )

    # -- one trial
    def run_trial(self, stage: str, trial) -> dict[str, float]:  # noqa: ANN001
        values = dict(trial.hyperparameters.values)
        variant = variants()[values.pop("variant")]
        if stage == TUNE:
            seed, nuisance = int(values.pop("tune_seed")), values
        else:
            seed, nuisance = int(values["seed"]), self.best[variant.name]
        key = f"{stage}/{trial.trial_id}"
        epochs = self.study.trial_epochs(tuning=stage == TUNE)
        earlier = self.tracker.trial_runs(key)  # one look-up serves both checks below
        previous = self.tracker.finished_trial(key, earlier)
        if previous is not None:  # finished in MLflow, then the process died: keep that run
            self.progress.skip(1, epochs)
            return {"val_accuracy": previous.data.metrics["val_accuracy"]}

        settings = {**self.study.settings(nuisance, variant), "epochs": epochs}  # tune_epochs
        params = self._params(stage, variant, seed, settings, nuisance)
        name = f"{stage}-{variant.name}-" + (
            f"seed{seed}" if stage == REPLICATE else f"t{trial.trial_id}"
        )
        run_id = self.tracker.start_trial(key, stage, name, params, earlier)
        started = time.perf_counter()
        detail = f"seed={seed}" if stage == REPLICATE else f"{_fmt(nuisance)} seed={seed}"
        try:
            metrics = self._train(stage, variant, seed, settings, run_id)
        except BaseException as err:
            reason = (
                str(err)
                if isinstance(err, training.DivergedError)
                else f"{type(err).__name__}: {err}"
            )
            interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
            self.tracker.end_trial(run_id, "KILLED" if interrupted else "FAILED", reason)
            if interrupted:
                raise
            self.progress.trial(
                stage,
                variant.name,
                detail,
                f"FAILED ({reason[:40]})",
                time.perf_counter() - started,
                epochs,
            )
            raise keras_tuner.errors.FailedTrialError(reason) from err
        self.tracker.end_trial(run_id)
        result = f"val_acc {metrics['val_accuracy']:.4f}"
        if stage == REPLICATE:
            result = f"test_acc {metrics['test_accuracy']:.4f}"
        seconds = time.perf_counter() - started
        self.progress.trial(stage, variant.name, detail, result, seconds, epochs)
        return {"val_accuracy": metrics["val_accuracy"]}

    def _params(self, stage, variant, seed, settings, nuisance) -> dict[str, Any]:  # noqa: ANN001
        fixed = {k: v for k, v in settings.items() if k not in nuisance}
        return {
            "variant": variant.name,
            "padding": variant.padding,
            "downsample": variant.downsample,
            "seed": seed,
            "dataset": self.study.dataset,
            "stage": stage,
            **{k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in fixed.items()},
            **nuisance,
            "n_train": len(self.splits.y_train),
        }

    def _train(
        self, stage: str, variant, seed: int, settings: dict, run_id: str
    ) -> dict[str, float]:  # noqa: ANN001
        keras.utils.set_random_seed(seed)
        input_shape, n_classes = self.splits.input_shape, self.study.n_classes
        steps = -(-len(self.splits.y_train) // settings["batch_size"])
        model = build_model(variant, settings, input_shape, n_classes)
        model = compile_model(model, settings, steps_per_epoch=steps)
        table = variant_table(variant, settings, input_shape, n_classes, model)
        self._log_table(run_id, table)

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            self.tracker.log_metrics(run_id, logs, step=epoch + 1)

        fit = training.fit(
            model,
            self.splits,
            seed=seed,
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            augment_shift=settings["augment_shift"],
            on_epoch=on_epoch,
        )
        metrics = {
            "val_accuracy": fit.history["val_accuracy"][-1],
            "val_loss": fit.history["val_loss"][-1],
            "params": float(model.count_params()),
            "macs": float(sum(r["macs"] for r in table)),
            "train_seconds": fit.train_seconds,
            "train_images_per_second": fit.train_images_per_second,
        }
        if stage == REPLICATE:
            metrics.update(self._evaluate(model))
            metrics.update(self._border(model, variant, settings))
        final = {k: v for k, v in metrics.items() if k not in training.EPOCH_METRICS}
        self.tracker.log_metrics(run_id, final, step=settings["epochs"])  # curves logged per epoch
        self._log_curve(run_id, fit.history, variant.name, seed)
        return metrics

    def _evaluate(self, model: keras.Model) -> dict[str, float]:
        """The one look at the test split: accuracy, the claim probes, and inference cost."""
        scores, infer_rate = training.timed_predict(model, self.eval_inputs)
        parts = [
            scores[a:b] for a, b in zip(self.eval_bounds[:-1], self.eval_bounds[1:], strict=True)
        ]
        test = training.scores_metrics(parts[0], self.splits.y_test)
        train = training.scores_metrics(parts[1], self.train_sample_y)
        return {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            **probes.shift_metrics(parts[0], parts[2:], self.probe_set.y),
            **probes.gap_metrics(train["accuracy"], test["accuracy"]),
            "infer_images_per_second": infer_rate,
        }

    def _border(self, model: keras.Model, variant, settings: dict) -> dict[str, float]:  # noqa: ANN001
        """The border probe: the trained weights on the larger canvas (gap head only)."""
        border = self.probe_set.border
        if border is None:
            return {}
        big = build_model(variant, settings, border.placed[0].shape[1:], self.study.n_classes)
        big.set_weights(model.get_weights())
        return probes.border_probe(
            lambda x: big.predict(x, batch_size=256, verbose=0), border, self.probe_set.y
        )

    # -- artifacts
    def _log_table(self, run_id: str, table: list[dict]) -> None:
        """The layer table as an MLflow table (layers.json: one row per layer)."""
        self.tracker.log_table(run_id, table, "layers.json")

    def _log_curve(
        self, run_id: str, history: dict[str, list[float]], name: str, seed: int
    ) -> None:
        image = learning_curve_image(history, f"{name}, seed {seed}")
        self.tracker.log_image(run_id, image, "learning_curve.png")
