"""The atlas: derived datasets, random-effects pooling against a hand-worked example,
skipping a study without data, and a tiny atlas end to end."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from cnnstudy.nets.data import _load_mnist5k, load_splits, on_canvas
from cnnstudy.report import atlas
from tests.helpers import ROOT

# ---------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def raw():
    x, y, _, _ = _load_mnist5k()
    return x[::10], y[::10]  # 500 digits, every class


def test_translated_and_cluttered_keep_every_digit_pixel(raw):
    x, y = raw
    translated, ty, _, _ = on_canvas((x, y, None, None), seed=0, clutter=0)
    cluttered, cy, _, _ = on_canvas((x, y, None, None), seed=0, clutter=4)
    assert translated.shape[1:] == (40, 40, 1) and (ty == y).all() and (cy == y).all()
    # the whole digit is on the canvas: no ink lost
    np.testing.assert_allclose(translated.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)))
    # the digit sits at the same place under clutter, and clutter only adds ink
    assert (cluttered >= translated).all()
    assert (cluttered.sum(axis=(1, 2, 3)) > translated.sum(axis=(1, 2, 3))).mean() > 0.9
    # places vary: not every digit in the same spot
    rows = np.argmax(translated.max(axis=(2, 3)) > 0, axis=1)
    assert len(np.unique(rows)) > 5


def test_derived_datasets_are_deterministic_by_split_seed(raw):
    a = on_canvas((*raw, None, None), seed=3, clutter=4)[0]
    b = on_canvas((*raw, None, None), seed=3, clutter=4)[0]
    c = on_canvas((*raw, None, None), seed=4, clutter=4)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_derived_splits_stay_stratified():
    s = load_splits("mnist5k_translated", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    assert s.input_shape == (40, 40, 1) and s.x_train.max() <= 1.0
    train = np.bincount(s.y_train, minlength=10) / len(s.y_train)
    test = np.bincount(s.y_test, minlength=10) / len(s.y_test)
    assert np.abs(train - test).max() < 0.01


# ---------------------------------------------------------------- pooling


def test_dersimonian_laird_matches_a_hand_worked_example():
    # y = (1.0, 2.0, -0.5) pts, v = (1e-5, 2e-5, 1.5e-5): by hand, w = 1/v =
    # (100000, 50000, 66666.7), sum 216666.7; fixed mean = (1000 + 1000 - 333.3) / 216666.7
    # = 0.0076923; Q = sum w (y - mean)^2 = 18.846; C = sum w - sum w^2 / sum w = 138461.5;
    # tau^2 = (Q - 2) / C = 1.2167e-4; I^2 = (Q - 2) / Q = 0.8939; w* = 1 / (v + tau^2);
    # pooled = sum w* y / sum w* = 0.0082173.
    y = np.array([0.01, 0.02, -0.005])
    v = np.array([1e-5, 2e-5, 1.5e-5])
    p = atlas.pool(y, np.sqrt(v))
    assert p["tau2"] == pytest.approx(1.2167e-4, rel=1e-3)
    assert p["i2"] == pytest.approx(0.8939, rel=1e-3)
    w = 1 / (v + p["tau2"])
    assert p["estimate"] == pytest.approx((w * y).sum() / w.sum())
    assert p["estimate"] == pytest.approx(0.0082173, rel=1e-4)
    assert p["se"] == pytest.approx(np.sqrt(1 / w.sum()))


def test_agreeing_studies_have_no_heterogeneity():
    p = atlas.pool(np.array([0.01, 0.01, 0.01]), np.array([0.002, 0.003, 0.004]))
    assert p["tau2"] == 0.0 and p["i2"] == 0.0
    assert p["estimate"] == pytest.approx(0.01)


def effects_of(estimates, se=0.001, comparison=("maxpool", "stride")):
    a, b = comparison
    return pd.DataFrame(
        {
            "study": [f"s{i}" for i in range(len(estimates))],
            "dataset": "d",
            "comparison": f"{a} vs {b}",
            "a": a,
            "b": b,
            "n_seeds": 5,
            "estimate": estimates,
            "ci_low": np.array(estimates) - 2 * se,
            "ci_high": np.array(estimates) + 2 * se,
            "se": se,
            "verdict": "x",
        }
    )


def test_pooled_verdicts_follow_the_study_rules():
    wins = atlas.pooled_effects(effects_of([0.02, 0.021, 0.019]), margin=0.005)
    assert wins.iloc[0]["verdict"] == "maxpool wins" and wins.iloc[0]["k"] == 3
    same = atlas.pooled_effects(effects_of([0.0, 0.0005, -0.0005]), margin=0.005)
    assert same.iloc[0]["verdict"] == "equivalent"
    flip = atlas.pooled_effects(effects_of([0.02, -0.02], se=0.002), margin=0.005)
    assert flip.iloc[0]["verdict"] == "inconclusive" and flip.iloc[0]["i2"] > 0.9
    assert list(wins.columns[:9]) == atlas.POOLED_COLUMNS


def test_a_study_without_data_is_skipped_and_the_atlas_still_renders(tmp_path, monkeypatch):
    from cnnstudy.core.study import load_study
    from cnnstudy.run.atlas import unavailable

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty cache
    reason = unavailable(load_study(ROOT / "experiments/cifar10.toml"))
    assert reason.startswith("skipped") and "data_path" in reason
    assert unavailable(load_study(ROOT / "experiments/default.toml")) == ""
    results = tmp_path / "results"
    (results / "one").mkdir(parents=True)
    verdicts = pd.DataFrame(
        {"factor": ["downsampling"], "a": ["maxpool"], "b": ["stride"], "n_seeds": [3],
         "mean_diff": [0.01], "ci_low": [0.0], "ci_high": [0.02], "se": [0.004],
         "verdict": ["inconclusive"]}
    )  # fmt: skip
    verdicts.to_csv(results / "one" / "verdicts.csv", index=False)
    entries = [
        {"name": "one", "study": "one", "dataset": "mnist5k", "reason": ""},
        {"name": "cifar10", "study": "cifar10", "dataset": "cifar10", "reason": reason},
    ]
    out = atlas.write_atlas("atlas", 0.005, entries, results)
    text = (out / "report.md").read_text()
    assert "cifar10" in text and "skipped" in text
    assert len(pd.read_csv(out / "effects.csv")) == 1
    assert pd.read_csv(out / "pooled.csv").iloc[0]["method"] == "single study"


# ---------------------------------------------------------------- end to end

TINY_STUDY = """
[study]
name = "{name}"
dataset = "digits"
seeds = 2
budget = 1

[scientific]
downsamplings = ["maxpool", "stride"]

[fixed]
epochs = 4
batch_size = 32
head = "gap"
timing_repeats = 1
stage_widths = [16]
split_seed = {split}
"""


def test_tiny_atlas_end_to_end(tmp_path, monkeypatch):
    from cnnstudy.cli import main

    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    for split, name in enumerate(("tinya", "tinyb")):  # digits, two different splits
        (tmp_path / "experiments" / f"{name}.toml").write_text(
            TINY_STUDY.format(name=name, split=split)
        )
    (tmp_path / "experiments" / "atlas.toml").write_text(  # README shows this file's atlas
        '[atlas]\nname = "tiny_atlas"\nstudies = ["tinya", "tinyb", "cifar10"]\n'
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{atlas.README_BEGIN}\nold table\n{atlas.README_END}\n\nafter\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("CNNSTUDY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert main(["atlas", "experiments/atlas.toml"]) == 0
    out = tmp_path / "results" / "tiny_atlas"
    timing = pd.read_csv(out / "timing.csv").set_index("study")
    assert list(timing.index) == ["tinya", "tinyb", "total"]
    assert timing.loc["total", "seconds"] >= timing.loc[["tinya", "tinyb"], "seconds"].sum()
    text = readme.read_text()  # the generated block replaced the old one, nothing else moved
    block = text[text.index(atlas.README_BEGIN) : text.index(atlas.README_END)]
    assert "old table" not in text and text.endswith("\n\nafter\n")
    assert "| maxpool vs stride |" in block and "min in all" in block
    effects = pd.read_csv(out / "effects.csv")
    assert list(effects.columns) == atlas.EFFECT_COLUMNS
    assert set(effects["study"]) == {"tinya", "tinyb"}
    pooled = pd.read_csv(out / "pooled.csv").set_index("comparison")
    assert pooled.loc["maxpool vs stride", "k"] == 2
    assert pooled.loc["same vs valid", "method"] == "DerSimonian-Laird"
    assert np.isfinite(pooled["estimate"]).all() and (pooled["tau2"] >= 0).all()
    report = (out / "report.md").read_text()
    for section in ("Which verdicts hold", "Forest plots", "Each study's headline",
                    "Claims across datasets", "cifar10"):  # fmt: skip
        assert section in report
    assert (out / "report.html").exists() and list((out / "figures").glob("forest_*.png"))
    # a second run resumes: both sweeps are complete, nothing retrains, and the measured
    # cost of each study stays the one from the run that trained it
    assert main(["atlas", "experiments/atlas.toml"]) == 0
    assert os.path.exists(tmp_path / "results" / "tinya" / "report.html")
    again = pd.read_csv(out / "timing.csv").set_index("study")
    pd.testing.assert_frame_equal(again.loc[["tinya", "tinyb"]], timing.loc[["tinya", "tinyb"]])
    assert (timing.loc[["tinya", "tinyb"], "trials"] == 4 * (2 + 2)).all()  # 4 variants
