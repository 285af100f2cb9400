"""Probes of the textbook claims, run on each replicate trial's trained model.

- ``shift_consistency`` (Zhang 2019): the share of test images whose top-1 class is
  the same under two independent random shifts of up to k px (zero-filled).
- ``border_accuracy`` / ``center_accuracy``: the same test images, translated so that
  their content's bounding box (pixels > 0.1) touches one image edge (an edge drawn
  per image; the other axis stays centred), against translated so the box is centred.
  No content pixel is cut off by either translation.
- ``generalization_gap``: train accuracy - test accuracy at the end of training.

All random draws come from ``probe_seed``: every variant sees the same shifted images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnstudy.nets.imageops import content_boxes, random_shifts, shift_each


@dataclass
class ProbeSet:
    """The probe inputs of one sweep: built once from the test split, shared by all trials."""

    shifted_a: np.ndarray
    shifted_b: np.ndarray
    center: np.ndarray
    border: np.ndarray
    y: np.ndarray
    mean_border_offset: float  # px between the centred and the border placement

    def inputs(self) -> list[np.ndarray]:
        return [self.shifted_a, self.shifted_b, self.center, self.border]


def centre_offsets(boxes: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    top, bottom, left, right = boxes.T
    dy = np.round((h - 1) / 2 - (top + bottom) / 2).astype(int)
    dx = np.round((w - 1) / 2 - (left + right) / 2).astype(int)
    return dy, dx


def border_offsets(
    boxes: np.ndarray, edges: np.ndarray, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets that move each box onto its edge, centring it along the other axis."""
    top, bottom, left, right = boxes.T
    dy, dx = centre_offsets(boxes, h, w)
    dy = np.where(edges == 0, -top, np.where(edges == 1, h - 1 - bottom, dy))
    dx = np.where(edges == 2, -left, np.where(edges == 3, w - 1 - right, dx))
    return dy, dx


def build_probe_set(x_test: np.ndarray, y_test: np.ndarray, k: int, seed: int) -> ProbeSet:
    rng = np.random.default_rng(seed)
    n, h, w = x_test.shape[:3]
    a = shift_each(x_test, *random_shifts(rng, n, k))
    b = shift_each(x_test, *random_shifts(rng, n, k))
    boxes = content_boxes(x_test)
    cdy, cdx = centre_offsets(boxes, h, w)
    edges = rng.integers(0, 4, size=n)
    bdy, bdx = border_offsets(boxes, edges, h, w)
    return ProbeSet(
        shifted_a=a,
        shifted_b=b,
        center=shift_each(x_test, cdy, cdx),
        border=shift_each(x_test, bdy, bdx),
        y=np.asarray(y_test),
        mean_border_offset=float(np.mean(np.hypot(bdy - cdy, bdx - cdx))),
    )


def run_probes(predict, probes: ProbeSet, train_accuracy: float, test_accuracy: float) -> dict:  # noqa: ANN001
    """``predict`` maps images to class scores (e.g. a bound ``model.predict``)."""
    scores = [predict(x) for x in probes.inputs()]
    return probe_metrics(scores, probes.y, train_accuracy, test_accuracy)


def probe_metrics(
    scores: list[np.ndarray], y: np.ndarray, train_accuracy: float, test_accuracy: float
) -> dict:
    """The probe metrics from class scores of ``ProbeSet.inputs()``, in that order."""
    a, b, center_scores, border_scores = (np.argmax(s, axis=-1) for s in scores)
    consistency = float(np.mean(a == b))
    border = float(np.mean(border_scores == y))
    center = float(np.mean(center_scores == y))
    return {
        "shift_consistency": consistency,
        "border_accuracy": border,
        "center_accuracy": center,
        "border_minus_center": border - center,
        "train_accuracy": train_accuracy,
        "generalization_gap": train_accuracy - test_accuracy,
    }
