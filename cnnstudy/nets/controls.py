"""Known-answer controls: every probe run on models whose answer is known by construction.

``cnnstudy probes --controls`` prints them; the test suite runs the same ones. Each control
calls the probe code the sweep uses (``nets.probes``), on a model built here:

- padding, positive: a hand-set point detector (3x3 kernel, +1 centre, -1 around it) with
  global max pooling. Under ``valid`` a pixel on the outermost row or column is never the
  centre of a window, so the detector provably cannot fire on it; under ``same`` it can.
  On bright-vs-dim single pixels the border probe must read difference-in-differences
  +0.5 (same: edge = centre = 1.0; valid: edge 0.5, centre 1.0).
- padding, negative: the same two detectors, read one pixel in from the edge, where a
  ``valid`` window can centre on the pixel too: the probe must read 0 (this also pins the
  placement distance exactly).
- shift, positive: circular padding, a random convolution, ReLU, global average pooling
  and a random dense layer: exactly invariant to circular shifts, so consistency 1.0.
- shift, negative: a position readout (class = (row + column) of the ink, mod 10): a
  diagonal shift by delta moves the class by 2 delta, so consistency 0 for delta = 1..4.
- overfitting, positive: a dense network memorising 40 digits (150 full-batch steps): a
  large train - test gap. Negative: the same model scored on its own training images as
  its "test" set: gap 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from cnnstudy.nets import probes

CONTROL_COLUMNS = ("control", "probe", "expected", "measured", "rule", "result")


@dataclass
class Control:
    control: str
    probe: str
    expected: float
    measured: float
    rule: str  # what PASS means
    passed: bool

    def row(self) -> dict:
        return {
            "control": self.control,
            "probe": self.probe,
            "expected": self.expected,
            "measured": self.measured,
            "rule": self.rule,
            "result": "PASS" if self.passed else "FAIL",
        }


# ---------------------------------------------------------------- constructed models


def point_detector(padding: str, scale: float = 1.0, size: int = 12) -> keras.Model:
    """Fires (class 1) on a bright isolated pixel the 3x3 window is centred on."""
    kernel = -np.ones((3, 3, 1, 1), dtype="float32")
    kernel[1, 1] = 1.0
    inputs = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(1, 3, padding=padding, activation="relu", use_bias=False)
    h = keras.layers.GlobalMaxPooling2D()(conv(inputs))
    head = keras.layers.Dense(2)
    model = keras.Model(inputs, head(h))
    conv.set_weights([kernel * scale])
    # logits: [0.65 * scale, response]: class 1 when the response beats the threshold
    head.set_weights([np.array([[0.0, 1.0]], "float32"), np.array([0.65 * scale, 0.0], "float32")])
    return model


def pixel_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One pixel per image at a random place: bright (1.0, class 1) or dim (0.3, class 0)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)  # exactly balanced: valid's edge accuracy is 0.5
    x = np.zeros((n, size, size, 1), dtype="float32")
    r, c = rng.integers(2, size - 2, size=(2, n))
    x[np.arange(n), r, c, 0] = np.where(y == 1, 1.0, 0.3)
    return x, y


def circular_invariant(x: np.ndarray, seed: int = 0) -> keras.Model:
    """Circular padding + conv + ReLU + global average pooling + dense: shift-invariant.
    The dense bias centres the class scores on ``x``, so the argmax follows the features
    rather than one dominant class (a constant bias keeps the invariance)."""

    def wrap(x):  # noqa: ANN001, ANN202 - one pixel of circular padding on each side
        x = keras.ops.concatenate([x[:, -1:], x, x[:, :1]], axis=1)
        return keras.ops.concatenate([x[:, :, -1:], x, x[:, :, :1]], axis=2)

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Lambda(wrap),
            keras.layers.Conv2D(16, 3, padding="valid", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    # Weights from numpy, not the backend's initializers: the same model on every backend
    # (a backend's own random draw can give a model that predicts one class).
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    weights = model.get_weights()
    weights[-1] = weights[-1] - model.predict(x, batch_size=256, verbose=0).mean(axis=0)
    model.set_weights(weights)
    return model


def position_readout(size: int = 28) -> Callable[[np.ndarray], np.ndarray]:
    """Class scores = ink on the pixels whose (row + column) mod 10 is that class."""
    rows, cols = np.indices((size, size))
    onehot = np.eye(10, dtype="float32")[(rows + cols) % 10]  # H x W x 10
    return lambda x: np.einsum("nhw,hwc->nc", x[..., 0], onehot)


# ---------------------------------------------------------------- the controls


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from cnnstudy.nets.data import load_splits  # noqa: PLC0415 - mnist5k only when needed

    s = load_splits("mnist5k", val_fraction=0.15, test_fraction=0.15, split_seed=seed)
    return s.x_train[:n], s.y_train[:n]  # shuffled and stratified by the split


def padding_controls() -> list[Control]:
    x, y = pixel_images(400, 12, seed=0)
    border = probes.build_border_set(x, seed=0, margin=4)

    def read(model: keras.Model) -> dict:
        return probes.border_probe(lambda b: model.predict(b, verbose=0), border, y)

    same, valid = read(point_detector("same")), read(point_detector("valid"))
    did = probes.difference_in_differences(same, valid)
    # one pixel in from the edge, a `valid` window can centre on the pixel: padding cannot matter
    inner = [
        probes.border_probe(lambda b, m=m: m.predict(b, verbose=0), border, y, edge=1)
        for m in (point_detector("same"), point_detector("valid"))
    ]
    null = probes.difference_in_differences(*inner)
    return [
        Control(
            "padding, positive: point detector on the outermost row, same vs valid",
            "border probe: (edge - centre) same minus valid",
            0.5,
            did,
            "|measured - 0.5| <= 0.05: the probe reads 'same keeps border information'",
            abs(did - 0.5) <= 0.05,
        ),
        Control(
            "padding, negative: the same detectors with the pixel 1 px in from the edge",
            "border probe at d = 1: (edge - centre) same minus valid",
            0.0,
            null,
            "|measured| <= 0.02",
            abs(null) <= 0.02,
        ),
    ]


def shift_controls(x: np.ndarray, y: np.ndarray, k: int = 4) -> list[Control]:
    views = probes.shift_views(x, k)
    model = circular_invariant(x)

    def predict(b: np.ndarray) -> np.ndarray:
        return model.predict(b, batch_size=256, verbose=0)

    base = predict(x)
    invariant = probes.shift_metrics(base, [predict(v) for v in views], y)
    classes = len(np.unique(np.argmax(base, axis=-1)))  # a collapsed model is trivially consistent
    readout = position_readout(x.shape[1])
    position = probes.shift_metrics(readout(x), [readout(v) for v in views], y)
    return [
        Control(
            "shift, positive: circular conv + global average pooling (exactly invariant)",
            f"shift consistency, mean over delta = 1..{k}",
            1.0,
            invariant["shift_consistency"],
            f"measured >= 0.99, over {classes} predicted classes (>= 3: not a collapsed model)",
            invariant["shift_consistency"] >= 0.99 and classes >= 3,
        ),
        Control(
            "shift, negative: position readout, class = (row + column) mod 10",
            f"shift consistency, mean over delta = 1..{k}",
            0.0,
            position["shift_consistency"],
            "measured <= 0.1",
            position["shift_consistency"] <= 0.1,
        ),
    ]


def overfitting_controls(x: np.ndarray, y: np.ndarray) -> list[Control]:
    keras.utils.set_random_seed(0)
    x_small, y_small, x_test, y_test = x[:40], y[:40], x[40:], y[40:]
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_small, y_small, batch_size=40, epochs=150, verbose=0)

    def accuracy(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(np.argmax(model.predict(a, verbose=0), axis=-1) == b))

    train = accuracy(x_small, y_small)
    memorised = probes.gap_metrics(train, accuracy(x_test, y_test))["generalization_gap"]
    own = probes.gap_metrics(train, accuracy(x_small, y_small))["generalization_gap"]
    return [
        Control(
            "overfitting, positive: dense net memorising 40 digits",
            "generalization gap (train - test accuracy)",
            0.3,
            memorised,
            "measured >= 0.2 (a large gap)",
            memorised >= 0.2,
        ),
        Control(
            "overfitting, negative: the same model tested on its own training images",
            "generalization gap (train - test accuracy)",
            0.0,
            own,
            "|measured| <= 0.01",
            abs(own) <= 0.01,
        ),
    ]


def run_controls(progress: Callable[[Control], None] | None = None) -> list[Control]:
    """Every control, in order; ``progress`` is called as each one finishes."""
    x, y = _digits(1000, seed=0)
    out: list[Control] = []
    for group in (
        padding_controls,
        lambda: shift_controls(x[:500], y[:500]),
        lambda: overfitting_controls(x, y),
    ):
        for c in group():
            out.append(c)
            if progress is not None:
                progress(c)
    return out
