"""Probes on constructed inputs, where the right answer is known."""

import numpy as np
import pytest

from cnnstudy.nets.imageops import content_boxes, shift
from cnnstudy.nets.probes import border_offsets, build_probe_set, centre_offsets, run_probes


def blobs(n=60, size=16, seed=0):
    """Images with one bright rectangle somewhere inside a 4-px margin; labels 0..2."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        h, w = rng.integers(2, 5, size=2)
        top, left = rng.integers(4, size - 4 - h + 1), rng.integers(4, size - 4 - w + 1)
        x[i, top : top + h, left : left + w, 0] = 1.0
    return x, np.arange(n) % 3


def test_shift_moves_content_and_zero_fills():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) + 1
    out = shift(x, 1, -2)
    np.testing.assert_array_equal(out[0, 1:, :2, 0], x[0, :3, 2:, 0])
    assert (out[0, 0] == 0).all() and (out[0, :, 2:] == 0).all()
    assert (shift(x, 4, 0) == 0).all()


def test_position_blind_model_is_fully_shift_consistent():
    x, y = blobs()
    probes = build_probe_set(x, y, k=3, seed=0)

    def by_mass(batch):  # depends on how much content, not where it is
        mass = batch.sum(axis=(1, 2, 3)).astype(int)
        return np.eye(20)[mass % 20]

    out = run_probes(by_mass, probes, train_accuracy=1.0, test_accuracy=0.9)
    assert out["shift_consistency"] == 1.0
    assert out["generalization_gap"] == pytest.approx(0.1)


def test_position_sensitive_model_is_not():
    x, y = blobs()
    probes = build_probe_set(x, y, k=3, seed=0)

    def by_centroid_column(batch):
        cols = np.arange(batch.shape[2])
        weight = batch.sum(axis=(1, 3))
        centroid = (weight * cols).sum(axis=1) / weight.sum(axis=1)
        return np.eye(16)[np.round(centroid).astype(int)]

    assert run_probes(by_centroid_column, probes, 1.0, 1.0)["shift_consistency"] < 0.5


def test_border_and_centre_translations_are_as_documented():
    x, y = blobs(n=40, seed=3)
    probes = build_probe_set(x, y, k=2, seed=1)
    h, w = x.shape[1:3]
    centre = content_boxes(probes.center)
    border = content_boxes(probes.border)
    # no content is lost by either translation: the same images, moved
    np.testing.assert_allclose(probes.center.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(probes.border.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)))
    # centred: box centre within half a pixel of the frame centre
    assert np.all(np.abs((centre[:, 0] + centre[:, 1]) / 2 - (h - 1) / 2) <= 0.5)
    assert np.all(np.abs((centre[:, 2] + centre[:, 3]) / 2 - (w - 1) / 2) <= 0.5)
    # border: every box touches an edge of the frame
    touches = (
        (border[:, 0] == 0)
        | (border[:, 1] == h - 1)
        | (border[:, 2] == 0)
        | (border[:, 3] == w - 1)
    )
    assert touches.all()
    assert probes.mean_border_offset > 2


def test_border_offsets_follow_the_chosen_edge():
    boxes = np.array([[5, 8, 6, 9]] * 4)  # top, bottom, left, right in a 16x16 frame
    dy, dx = border_offsets(boxes, np.array([0, 1, 2, 3]), 16, 16)
    cdy, cdx = centre_offsets(boxes, 16, 16)
    assert dy.tolist() == [-5, 7, cdy[2], cdy[3]]
    assert dx.tolist() == [cdx[0], cdx[1], -6, 6]


def test_probe_set_is_the_same_for_every_variant():
    x, y = blobs()
    a, b = build_probe_set(x, y, 3, seed=7), build_probe_set(x, y, 3, seed=7)
    np.testing.assert_array_equal(a.shifted_a, b.shifted_a)
    np.testing.assert_array_equal(a.border, b.border)
    assert not np.array_equal(a.shifted_a, build_probe_set(x, y, 3, seed=8).shifted_a)
