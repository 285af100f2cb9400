"""Train and evaluate one model. Backend-neutral Keras 3; knows nothing of tuners or MLflow.

Data order is common random numbers: epoch e of seed s visits the training set in the
permutation drawn from ``numpy.random.default_rng(s)``, whatever the variant, so
differences between variants at the same seed can be paired.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from cnnstudy.datasets import Splits
from cnnstudy.imageops import random_shifts, shift_each

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
            self.seconds.append(time.perf_counter() - self._t0)
            self._open = False

    def on_test_begin(self, logs=None):  # noqa: ANN001, ANN201
        self._close()

    def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001, ANN201
        self._close()


def epoch_order(seed: int, epochs: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def fit(
    model: keras.Model,
    splits: Splits,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    augment_shift: int = 0,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train epoch by epoch in the seed's data order; raise DivergedError on a NaN loss."""
    n = len(splits.y_train)
    aug_rng = np.random.default_rng([seed, 1])
    clock = _TrainClock()
    result = FitResult(history={m: [] for m in EPOCH_METRICS})
    start = time.perf_counter()
    for epoch, order in enumerate(epoch_order(seed, epochs, n)):
        x = splits.x_train[order]
        if augment_shift:
            x = shift_each(x, *random_shifts(aug_rng, n, augment_shift))
        logs = model.fit(
            x,
            splits.y_train[order],
            batch_size=batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            validation_data=(splits.x_val, splits.y_val),
            callbacks=[keras.callbacks.TerminateOnNaN(), clock],
            verbose=0,
        ).history
        values = {m: float(logs[m][-1]) for m in EPOCH_METRICS if logs.get(m)}
        if not math.isfinite(values.get("loss", math.nan)):
            raise DivergedError(epoch)
        for m, v in values.items():
            result.history[m].append(v)
        if on_epoch is not None:
            on_epoch(epoch, values)
    result.train_seconds = time.perf_counter() - start
    steady = clock.seconds[1:] or clock.seconds
    result.train_images_per_second = n * len(steady) / max(sum(steady), 1e-9)
    return result


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict:
    loss, acc = model.evaluate(x, y, batch_size=batch_size, verbose=0)
    return {"loss": float(loss), "accuracy": float(acc)}


def inference_images_per_second(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> float:
    """Steady-state predict throughput: one warm-up call, then the whole array, timed."""
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)
    start = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)
    return len(x) / max(time.perf_counter() - start, 1e-9)
