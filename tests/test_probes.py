"""Probes on constructed inputs and models, where the right answer is known."""

import numpy as np
import pytest

from cnnstudy.nets import controls, probes
from cnnstudy.nets.imageops import content_boxes, shift


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


def test_shift_views_are_circular_diagonal_shifts_of_real_content():
    x, _ = blobs()
    views = probes.shift_views(x, 3)
    assert len(views) == 3
    for d, v in enumerate(views, start=1):
        np.testing.assert_array_equal(v[:, d:, d:], x[:, :-d, :-d])  # moved by (d, d)
        np.testing.assert_allclose(v.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)))  # none lost


def test_shift_metrics_per_delta():
    y = np.array([0, 1, 2, 0])
    base = np.eye(3)[[0, 1, 2, 0]]
    views = [np.eye(3)[[0, 1, 2, 0]], np.eye(3)[[0, 1, 1, 1]]]  # delta 1 same; delta 2 half
    out = probes.shift_metrics(base, views, y)
    assert out["consistency_d1"] == 1.0 and out["consistency_d2"] == 0.5
    assert out["shift_consistency"] == 0.75
    assert out["shifted_accuracy_d2"] == 0.5


def test_border_placement_is_as_documented():
    x, y = blobs(n=40, seed=3)
    border = probes.build_border_set(x, seed=1, margin=4, distances=(0, 2))
    size = x.shape[1] + 8
    for batch in border.inputs():  # no content lost, on the larger canvas
        assert batch.shape[1:3] == (size, size)
        np.testing.assert_allclose(batch.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)))
    for d, batch in zip(border.distances, border.placed, strict=True):
        top, bottom, left, right = content_boxes(batch).T
        nearest = np.minimum.reduce([top, size - 1 - bottom, left, size - 1 - right])
        assert (nearest == d).all()
    # the reference is each image unmoved, only the canvas around it larger
    np.testing.assert_array_equal(border.centre[:, 4:-4, 4:-4], x)
    assert border.centre[:, :4].sum() == 0 and border.centre[:, :, -4:].sum() == 0


def test_probe_set_is_the_same_for_every_variant():
    x, y = blobs()
    a, b = probes.build_probe_set(x, y, 3, 7, True), probes.build_probe_set(x, y, 3, 7, True)
    np.testing.assert_array_equal(a.border.placed[0], b.border.placed[0])
    other = probes.build_probe_set(x, y, 3, 8, True)
    assert not np.array_equal(a.border.placed[0], other.border.placed[0])
    assert probes.build_probe_set(x, y, 3, 7, border=False).border is None


# ---------------------------------------------------------------- known-answer controls


@pytest.fixture(scope="module")
def digits():
    return controls._digits(1000, seed=0)


def test_padding_controls_read_their_known_answers():
    positive, negative = controls.padding_controls()
    assert positive.measured == pytest.approx(0.5, abs=1e-9)  # exactly, by construction
    assert negative.measured == 0.0  # 1 px in, valid sees the pixel too
    assert positive.passed and negative.passed


def test_point_detector_cannot_see_the_outermost_row_under_valid():
    x = np.zeros((2, 12, 12, 1), np.float32)
    x[0, 0, 6] = 1.0  # outermost row
    x[1, 6, 6] = 1.0  # interior
    valid = controls.point_detector("valid").predict(x, verbose=0).argmax(-1)
    same = controls.point_detector("same").predict(x, verbose=0).argmax(-1)
    assert valid.tolist() == [0, 1] and same.tolist() == [1, 1]


def test_shift_controls_read_their_known_answers(digits):
    positive, negative = controls.shift_controls(digits[0][:300], digits[1][:300])
    assert positive.measured == 1.0
    assert negative.measured <= 0.1
    assert positive.passed and negative.passed


def test_overfitting_controls_read_their_known_answers(digits):
    memorised, own = controls.overfitting_controls(*digits)
    assert memorised.measured >= 0.2
    assert own.measured == 0.0
    assert memorised.passed and own.passed


def test_probes_controls_command_passes_and_prints_each_control(capsys, tmp_path):
    from cnnstudy.cli import main

    out = tmp_path / "controls.csv"
    assert main(["probes", "--controls", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("PASS") == 6 and "FAIL" not in text
    assert "expected" in text and "measured" in text
    assert out.read_text().count("PASS") == 6


def test_probes_controls_command_exits_nonzero_on_a_fail(monkeypatch, capsys):
    from cnnstudy.cli import main

    bad = controls.Control("broken", "probe", 1.0, 0.0, "measured >= 0.99", False)
    monkeypatch.setattr(controls, "run_controls", lambda progress=None: [progress(bad), bad][1:])
    assert main(["probes", "--controls"]) == 1
    assert "FAIL" in capsys.readouterr().out
