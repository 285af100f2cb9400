"""Train and evaluate one model. Backend-neutral Keras 3; knows nothing of tuners or MLflow.

Data order is common random numbers: epoch e of seed s visits the training set in the
e-th permutation drawn from ``numpy.random.default_rng(s)``, whatever the variant, so
differences between variants at the same seed can be paired.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from cnnstudy.nets.data import Splits
from cnnstudy.nets.imageops import random_shifts, shift_each

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
EpochHook = Callable[[int, dict[str, float]], None]


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the trial is recorded as failed with this reason."""

    def __init__(self, epoch: int):
        super().__init__("nan loss")
        self.epoch = epoch


@dataclass
class FitResult:
    history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0  # wall time of all epochs, first-epoch compilation included
    train_images_per_second: float = 0.0  # steady state: epochs after the first, no validation
    diverged_at: int | None = None


class _TrainClock(keras.callbacks.Callback):
    """Time spent on training batches only: epoch start to the start of validation."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._t0 = 0.0
        self._open = False

    def on_epoch_begin(self, epoch, logs=None):  # noqa: ANN001, ANN201
        self._t0, self._open = time.perf_counter(), True

    def _close(self) -> None:
        if self._open:
            # Keras may still be running queued steps (JAX dispatches them asynchronously):
            # wait for the last one, whose results these are, before reading the clock
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)
            keras.ops.convert_to_numpy(self.model.trainable_variables[-1])
            self.seconds.append(time.perf_counter() - self._t0)
            self._open = False

    def on_test_begin(self, logs=None):  # noqa: ANN001, ANN201
        self._close()

    def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001, ANN201
        self._close()


def epoch_order(seed: int, epochs: int, n: int) -> list[np.ndarray]:
    """The training-set permutation of every epoch for ``seed`` (what SeededBatches serves)."""
    return [epoch_order_at(seed, e, n) for e in range(epochs)]


class SeededBatches(keras.utils.PyDataset):
    """Training batches in the seed's order, reshuffled (and re-augmented) every epoch.

    One ``fit`` call on any backend, and the same data stream for every variant at a seed.
    Epoch e's order and shifts come from ``(seed, e)`` alone, set by ``set_epoch`` from a
    callback: Keras may call ``on_epoch_end`` more often than once an epoch (it does once
    before training), and must be run with ``shuffle=False`` or it reorders the batches
    with its own RNG.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, shift: int = 0):
        super().__init__()
        self.x, self.y, self.batch_size, self.shift, self.seed = x, y, batch_size, shift, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.order = epoch_order_at(self.seed, epoch, len(self.y))
        if self.shift:
            rng = np.random.default_rng([self.seed, epoch, 1])
            self.offsets = random_shifts(rng, len(self.y), self.shift)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.x[idx]
        if self.shift:
            x = shift_each(x, self.offsets[0][idx], self.offsets[1][idx])
        return x, self.y[idx]


def epoch_order_at(seed: int, epoch: int, n: int) -> np.ndarray:
    """Epoch ``epoch``'s permutation of n training images at ``seed``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class _EpochEnd(keras.callbacks.Callback):
    def __init__(
        self, result: FitResult, hook: EpochHook | None, batches: SeededBatches, clock: _TrainClock
    ):
        super().__init__()
        self.result, self.hook, self.batches, self.clock = result, hook, batches, clock

    def on_epoch_begin(self, epoch, logs=None):  # noqa: ANN001, ANN201
        self.batches.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001, ANN201
        values = {m: float(logs[m]) for m in EPOCH_METRICS if m in (logs or {})}
        if not math.isfinite(values.get("loss", math.nan)):
            self.result.diverged_at = epoch
            self.model.stop_training = True
            return
        for m, v in values.items():
            self.result.history[m].append(v)
        if self.clock.seconds:  # training time of this epoch (the budget report's clock)
            values["epoch_seconds"] = self.clock.seconds[-1]
        if self.hook is not None:
            self.hook(epoch, values)


def fit(
    model: keras.Model,
    splits: Splits,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    augment_shift: int = 0,
    on_epoch: EpochHook | None = None,
    nan_check: str = "batch",
) -> FitResult:
    """Train in the seed's data order; raise DivergedError on a NaN loss.

    ``nan_check="batch"`` stops at the first NaN batch (``TerminateOnNaN``). That per-batch
    hook also makes Keras wait for every step's loss instead of dispatching the next step
    while the device works; ``"epoch"`` checks only at the end of each epoch, so a diverged
    run trains out the epoch it diverged in. `make bench-gpu` measures the two side by side:
    on a 2-core CPU under JAX, "epoch" is slower (host and XLA share the cores), so "batch"
    stays until a GPU measurement says otherwise."""
    if nan_check not in ("batch", "epoch"):
        raise ValueError(f"nan_check must be 'batch' or 'epoch', not {nan_check!r}")
    clock = _TrainClock()
    result = FitResult(history={m: [] for m in EPOCH_METRICS})
    batches = SeededBatches(splits.x_train, splits.y_train, batch_size, seed, augment_shift)
    start = time.perf_counter()
    model.fit(
        batches,
        epochs=epochs,
        validation_data=(splits.x_val, splits.y_val),
        validation_batch_size=256,
        shuffle=False,  # the order is ours (SeededBatches), not Keras's
        callbacks=[
            *([keras.callbacks.TerminateOnNaN()] if nan_check == "batch" else []),
            clock,
            _EpochEnd(result, on_epoch, batches, clock),
        ],
        verbose=0,
    )
    if result.diverged_at is None and len(result.history["loss"]) < epochs:
        result.diverged_at = len(result.history["loss"])  # stopped mid-epoch (nan_check=batch)
    if result.diverged_at is not None:
        raise DivergedError(result.diverged_at)
    result.train_seconds = time.perf_counter() - start
    steady = clock.seconds[1:] or clock.seconds
    result.train_images_per_second = len(splits.y_train) * len(steady) / max(sum(steady), 1e-9)
    return result


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict:
    loss, acc = model.evaluate(x, y, batch_size=batch_size, verbose=0)
    return {"loss": float(loss), "accuracy": float(acc)}


def timed_predict(
    model: keras.Model, x: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, float]:
    """Class scores for x, and steady-state images/s: the first batch (which compiles the
    predict function) is scored but not timed."""
    if len(x) <= 2 * batch_size:  # too small to split: warm up on all of it, then time it
        model.predict(x, batch_size=batch_size, verbose=0)
        start = time.perf_counter()
        scores = model.predict(x, batch_size=batch_size, verbose=0)
        return scores, len(x) / max(time.perf_counter() - start, 1e-9)
    head = model.predict(x[:batch_size], batch_size=batch_size, verbose=0)
    start = time.perf_counter()
    tail = model.predict(x[batch_size:], batch_size=batch_size, verbose=0)
    rate = (len(x) - batch_size) / max(time.perf_counter() - start, 1e-9)
    return np.concatenate([head, tail]), rate


def scores_metrics(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and sparse categorical cross-entropy (Keras's epsilon) from softmax scores."""
    p = np.clip(scores[np.arange(len(y)), y], 1e-7, 1.0)
    return {
        "accuracy": float(np.mean(scores.argmax(axis=1) == y)),
        "loss": float(-np.log(p).mean()),
    }
