"""Fair timing: every variant measured in one process, in randomized interleaved order.

Throughput logged during the sweep comes from sequential training (keras-tuner runs a
variant's seeds back to back), so slow drift of the machine lands on whole variants. This
pass builds every variant once, warms each up (graph compilation is not timed), then
times ``repeats`` rounds; each round visits the variants in a fresh random order, so
drift spreads over all of them. Inputs are random arrays of the study's data shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd

from cnnstudy.core.variants import Variant
from cnnstudy.nets.models import build_model, compile_model

TIMING_COLUMNS = (
    "round", "position", "variant", "train_images_per_second", "infer_images_per_second",
)  # fmt: skip


def interleaved_timing(
    variants: list[Variant],
    settings_of: Callable[[Variant], dict[str, Any]],
    input_shape: tuple[int, int, int],
    n_classes: int,
    *,
    repeats: int = 3,
    n_images: int = 1024,
    seed: int = 0,
) -> pd.DataFrame:
    """timing.csv: one row per (round, variant), images/s for a training epoch and predict."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_images, *input_shape), dtype=np.float32)
    y = rng.integers(0, n_classes, n_images)
    models = {}
    for v in variants:
        settings = settings_of(v)
        keras.utils.set_random_seed(seed)
        model = compile_model(build_model(v, settings, input_shape, n_classes), settings)
        batch = settings["batch_size"]
        model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)
        model.predict(x[:256], batch_size=256, verbose=0)  # compile both paths, untimed
        models[v.name] = (model, batch)
    rows = []
    for r in range(repeats):
        for position, name in enumerate(rng.permutation(list(models))):
            model, batch = models[name]
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            train = n_images / (time.perf_counter() - start)
            start = time.perf_counter()
            model.predict(x, batch_size=256, verbose=0)
            infer = n_images / (time.perf_counter() - start)
            rows.append(
                {
                    "round": r,
                    "position": position,
                    "variant": str(name),
                    "train_images_per_second": train,
                    "infer_images_per_second": infer,
                }
            )
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)
