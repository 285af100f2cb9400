"""Probes of the textbook claims, each validated on known-answer controls (``nets.controls``).

- **Shift consistency**, in the form of Zhang 2019 (adobe/antialiased-cnns,
  ``validate_diagonal``): for each shift size delta = 1..k, the share of test images whose
  top-1 class is the same on the image and on its *circular* shift by (delta, delta). A
  circular shift keeps every pixel of real content (nothing is cut off or zero-filled in);
  on digits with an empty margin wider than delta it equals a plain translation. Reported
  per delta, so aliasing shows (a stride-s network is often consistent at delta = s and not
  at delta = 1), beside the accuracy on the shifted images.
- **Border probe** (padding): the trained network is moved onto a larger canvas (``margin``
  px of zeros on every side; a ``gap`` head makes the weights size-agnostic) and each test
  digit is placed with its content box at distance d from one edge (drawn per image by the
  probe seed; centred along the other axis), and unmoved (the reference: the image as
  trained, only the canvas around it larger). A convolutional network with a ``gap`` head
  depends on absolute position only through the border (and the stride phase), so
  ``border_drop = acc(d = 0) - acc(reference)`` measures what the network loses on content
  at the border; the padding claim is the difference in differences,
  ``border_drop(same) - border_drop(valid)``, paired by seed. The claim checks that the
  reference scores like the test split (networks trained without shifts can be too
  translation-sensitive, and global pooling over a larger map dilutes features); if not,
  it is "not tested". A ``flatten`` head ties weights to positions, and a cluttered or
  natural background has no clean content box, so there the probe does not run.
- **Generalization gap**: accuracy on a fixed training sample (evaluation mode, after
  training) minus test accuracy. The claim compares it only between converged variants.

All random draws come from ``probe_seed``: every variant sees the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cnnstudy.nets.imageops import content_boxes, shift_each

Predict = Callable[[np.ndarray], np.ndarray]  # images -> class scores
BORDER_DISTANCES = (0, 1, 2, 4, 8)  # px from the content box to the nearest canvas edge
BORDER_MARGIN = 8  # px of canvas added on every side for the border probe


# ---------------------------------------------------------------- shift consistency


def circular_shift(x: np.ndarray, delta: int) -> np.ndarray:
    """Every image rolled delta px down and delta px right (diagonal, wrapping around)."""
    return np.roll(x, (delta, delta), axis=(1, 2))


def shift_views(x: np.ndarray, k: int) -> list[np.ndarray]:
    """The shifted views for delta = 1..k."""
    return [circular_shift(x, d) for d in range(1, k + 1)]


def shift_metrics(base_scores: np.ndarray, view_scores: list[np.ndarray], y: np.ndarray) -> dict:
    """Consistency and accuracy per delta, and their means over delta = 1..k."""
    base = np.argmax(base_scores, axis=-1)
    out: dict[str, float] = {}
    for d, scores in enumerate(view_scores, start=1):
        pred = np.argmax(scores, axis=-1)
        out[f"consistency_d{d}"] = float(np.mean(pred == base))
        out[f"shifted_accuracy_d{d}"] = float(np.mean(pred == y))
    k = len(view_scores)
    out["shift_consistency"] = float(np.mean([out[f"consistency_d{d}"] for d in range(1, k + 1)]))
    out["shifted_accuracy"] = float(
        np.mean([out[f"shifted_accuracy_d{d}"] for d in range(1, k + 1)])
    )
    return out


# ---------------------------------------------------------------- border probe


def place(x: np.ndarray, margin: int, distance: int | None, edges: np.ndarray) -> np.ndarray:
    """Images on a canvas ``margin`` px larger on every side, each content box at
    ``distance`` px from edge ``edges[i]`` (0 top, 1 bottom, 2 left, 3 right) and centred
    along the other axis; ``distance=None`` centres it on both axes."""
    canvas = np.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    h, w = canvas.shape[1:3]
    top, bottom, left, right = content_boxes(canvas).T
    dy = np.round((h - 1) / 2 - (top + bottom) / 2).astype(int)
    dx = np.round((w - 1) / 2 - (left + right) / 2).astype(int)
    if distance is not None:
        dy = np.where(
            edges == 0, distance - top, np.where(edges == 1, h - 1 - distance - bottom, dy)
        )
        dx = np.where(
            edges == 2, distance - left, np.where(edges == 3, w - 1 - distance - right, dx)
        )
    return shift_each(canvas, dy, dx)


@dataclass
class BorderSet:
    """The border probe's inputs: one canvas batch per distance, and the centred one."""

    margin: int
    distances: tuple[int, ...]
    placed: list[np.ndarray]
    centre: np.ndarray

    def inputs(self) -> list[np.ndarray]:
        return [*self.placed, self.centre]


def build_border_set(
    x: np.ndarray,
    seed: int,
    margin: int = BORDER_MARGIN,
    distances: tuple[int, ...] = BORDER_DISTANCES,
) -> BorderSet:
    edges = np.random.default_rng([seed, 2]).integers(0, 4, size=len(x))
    placed = [place(x, margin, d, edges) for d in distances]
    # the reference: each image unmoved, only the canvas around it larger (no re-centring, so
    # the digit keeps its trained place and its phase against the strides when margin is a
    # multiple of them)
    centre = np.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    return BorderSet(margin, tuple(distances), placed, centre)


def border_metrics(
    scores: list[np.ndarray], y: np.ndarray, distances: tuple[int, ...], edge: int = 0
) -> dict:
    """Accuracy per distance, on the unmoved reference (``centre_accuracy``), and
    border_drop = acc(d = edge) - acc(reference)."""
    acc = [float(np.mean(np.argmax(s, axis=-1) == y)) for s in scores]
    out = {f"edge_accuracy_d{d}": a for d, a in zip(distances, acc, strict=False)}
    out["centre_accuracy"] = acc[-1]
    out["border_drop"] = out[f"edge_accuracy_d{edge}"] - acc[-1]
    return out


def border_probe(predict: Predict, border: BorderSet, y: np.ndarray, edge: int = 0) -> dict:
    scores = [predict(x) for x in border.inputs()]
    return border_metrics(scores, y, border.distances, edge)


def difference_in_differences(same: dict, valid: dict) -> float:
    """(edge - centre) for ``same`` minus the same for ``valid``: > 0 means ``same`` loses
    less at the border."""
    return same["border_drop"] - valid["border_drop"]


# ---------------------------------------------------------------- the probe set of a sweep


@dataclass
class ProbeSet:
    """A sweep's probe inputs, built once from the test split and shared by every trial.

    ``views`` have the model's own input size (predicted with the test split in one pass);
    ``border`` is on the larger canvas and needs a model rebuilt at that size."""

    y: np.ndarray
    views: list[np.ndarray]
    border: BorderSet | None = field(default=None)

    def inputs(self) -> list[np.ndarray]:
        return list(self.views)


def build_probe_set(
    x_test: np.ndarray, y_test: np.ndarray, k: int, seed: int, border: bool
) -> ProbeSet:
    return ProbeSet(
        y=np.asarray(y_test),
        views=shift_views(x_test, k),
        border=build_border_set(x_test, seed) if border else None,
    )


def gap_metrics(train_accuracy: float, test_accuracy: float) -> dict:
    return {
        "train_accuracy": train_accuracy,
        "generalization_gap": train_accuracy - test_accuracy,
    }
