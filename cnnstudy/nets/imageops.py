"""Zero-filled integer translations of image batches (NHWC), used by augmentation and probes."""

from __future__ import annotations

import numpy as np


def shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move every image's content dy px down and dx px right; vacated pixels become 0."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = (
        (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    )
    src_x, dst_x = (
        (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    )
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


def shift_each(x: np.ndarray, dys: np.ndarray, dxs: np.ndarray) -> np.ndarray:
    """Shift image i by (dys[i], dxs[i]); grouped by offset so it stays vectorised."""
    out = np.empty_like(x)
    offsets = np.stack([dys, dxs], axis=1)
    for dy, dx in np.unique(offsets, axis=0):
        idx = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        out[idx] = shift(x[idx], int(dy), int(dx))
    return out


def random_shifts(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """n independent offsets, each coordinate uniform in [-k, k]."""
    return rng.integers(-k, k + 1, size=n), rng.integers(-k, k + 1, size=n)


def content_boxes(x: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Per image, the (top, bottom, left, right) rows/cols holding a pixel above threshold.

    An image with no such pixel gets the full frame.
    """
    mask = x.max(axis=-1) > threshold  # N x H x W
    h, w = mask.shape[1:]
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    empty = ~rows.any(axis=1)
    top = np.where(empty, 0, rows.argmax(axis=1))
    bottom = np.where(empty, h - 1, h - 1 - rows[:, ::-1].argmax(axis=1))
    left = np.where(empty, 0, cols.argmax(axis=1))
    right = np.where(empty, w - 1, w - 1 - cols[:, ::-1].argmax(axis=1))
    return np.stack([top, bottom, left, right], axis=1)
