"""End to end: a tiny sweep into a temporary sqlite store, read back from MLflow."""

import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest

from cnnstudy.cli import main
from cnnstudy.core.study import load_study
from cnnstudy.core.variants import variants
from cnnstudy.nets import training
from cnnstudy.nets.data import REGISTRY, Splits, load_splits, pad_splits
from cnnstudy.nets.models import build_model, compile_model
from tests.helpers import EXPERIMENTS, ROOT, TINY

PARAMS = {
    "variant",
    "padding",
    "downsample",
    "seed",
    "dataset",
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "stage",
}
FINAL = {
    "test_accuracy",
    "test_loss",
    "params",
    "macs",
    "train_seconds",
    "train_images_per_second",
    "infer_images_per_second",
}
EPOCH = {"loss", "accuracy", "val_loss", "val_accuracy"}
PROBES = {
    "shift_consistency",
    "consistency_d1",
    "shifted_accuracy_d1",
    "border_drop",  # the tiny sweep has a gap head: the border probe runs
    "edge_accuracy_d0",
    "centre_accuracy",
    "generalization_gap",
}


def test_parent_and_children_are_tagged_and_complete(tiny_sweep):
    _, runs, _ = tiny_sweep
    parents = runs[runs["tags.cnnstudy.kind"] == "sweep"]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    parent = parents.iloc[0]
    for tag in ("backend", "device", "fingerprint"):
        assert parent[f"tags.cnnstudy.{tag}"], tag
    assert parent["tags.version.keras"].startswith("3.")
    # MLflow's own source tags: the UI's Source, Version, User and Description
    assert parent["tags.mlflow.source.name"] == "experiments/smoke.toml"
    assert parent["tags.mlflow.source.type"] == "LOCAL"
    assert parent["tags.mlflow.source.git.commit"]
    assert parent["tags.mlflow.user"]
    assert "smoke" in parent["tags.mlflow.note.content"]
    trials = runs[runs["tags.cnnstudy.kind"] == "trial"]
    assert (trials["tags.mlflow.parentRunId"] == parent["run_id"]).all()
    assert trials["tags.cnnstudy.stage"].value_counts().to_dict() == {
        "tune": 4 * 2,
        "replicate": 8,
    }  # 2 tuning seeds
    assert (trials["status"] == "FINISHED").all()
    for name in PARAMS:
        assert trials[f"params.{name}"].notna().all(), name
    rep = trials[trials["tags.cnnstudy.stage"] == "replicate"]
    for name in FINAL | EPOCH | PROBES:
        assert rep[f"metrics.{name}"].notna().all(), name
    # the seeds are a grid factor: every variant x seed exactly once
    pairs = rep[["params.variant", "params.seed"]].value_counts()
    assert len(pairs) == 8 and (pairs == 1).all()
    assert ((rep["metrics.test_accuracy"] > 0) & (rep["metrics.test_accuracy"] <= 1)).all()
    # tuning never looks at the test split
    assert (
        trials[trials["tags.cnnstudy.stage"] == "tune"]
        .get("metrics.test_accuracy", pd.Series())
        .isna()
        .all()
    )


def test_per_epoch_curves_and_artifacts_are_logged(tiny_sweep):
    _, runs, _ = tiny_sweep
    client = mlflow.tracking.MlflowClient()
    run_id = runs[runs["tags.cnnstudy.stage"] == "replicate"].iloc[0]["run_id"]
    history = client.get_metric_history(run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]  # the tiny sweep's 2 epochs
    tune = runs[runs["tags.cnnstudy.stage"] == "tune"]
    assert (tune["params.epochs"] == "1").all()  # study.tune_epochs = 1, and it is logged
    tuned = client.get_metric_history(tune.iloc[0]["run_id"], "val_accuracy")
    assert [m.step for m in tuned] == [1]
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"layers.json", "learning_curve.png"} <= names
    # layers.json is an MLflow table, read back with shapes as tuples
    from cnnstudy.core.layers import LAYER_COLUMNS
    from cnnstudy.tracking.queries import layer_tables

    reps = runs[runs["tags.cnnstudy.stage"] == "replicate"]
    table = layer_tables(reps.rename(columns={"params.variant": "variant"}))
    assert set(LAYER_COLUMNS) <= set(table.columns)
    assert set(table["variant"]) == set(reps["params.variant"])
    assert all(isinstance(s, tuple) and s for s in table["output_shape"])
    parent = runs[runs["tags.cnnstudy.kind"] == "sweep"].iloc[0]["run_id"]
    assert {a.path for a in client.list_artifacts(parent)} >= {"study", "tuning"}


def test_the_splits_are_the_parent_runs_datasets(tiny_sweep):
    """train/val/test are logged once as dataset inputs (the UI's Dataset column), with
    digests that match the data the trials saw; the re-run did not log them again."""
    from cnnstudy.nets.data import study_splits

    tmp, runs, _ = tiny_sweep
    parent_id = runs[runs["tags.cnnstudy.kind"] == "sweep"].iloc[0]["run_id"]
    inputs = mlflow.tracking.MlflowClient().get_run(parent_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert sorted(by_context) == ["test", "train", "val"] and len(inputs) == 3
    splits = study_splits(load_study(tmp / "experiments/smoke.toml", [s for s in TINY if "=" in s]))
    for context, ds in by_context.items():
        assert ds.name == f"{splits.dataset}-{context}" and ds.digest
        again = mlflow.data.from_numpy(
            getattr(splits, f"x_{context}"), targets=getattr(splits, f"y_{context}")
        )
        assert ds.digest == again.digest, context


def test_rerun_adds_no_duplicates(tiny_sweep):
    _, first, second = tiny_sweep
    assert len(first) == len(second) == 1 + 4 * 2 + 8
    assert set(first["run_id"]) == set(second["run_id"])


def test_runs_csv_is_read_back_from_mlflow(tiny_sweep):
    tmp, runs, _ = tiny_sweep
    csv = pd.read_csv(tmp / "results/smoke/runs.csv")
    rep = runs[runs["tags.cnnstudy.stage"] == "replicate"].set_index("run_id")
    assert len(csv) == 8 and set(csv["run_id"]) == set(rep.index)
    for _, row in csv.iterrows():
        assert row["test_accuracy"] == pytest.approx(
            rep.loc[row["run_id"], "metrics.test_accuracy"], rel=1e-5
        )
    assert {"variant", "padding", "downsample", "seed", "learning_rate", *FINAL} <= set(csv.columns)


def test_nan_trial_is_failed_with_reason_and_the_sweep_goes_on(isolated_store):
    shutil.copy(ROOT / "experiments/smoke.toml", "experiments/smoke.toml")
    args = [
        "sweep",
        "experiments/smoke.toml",
        "--set",
        "study.limit=200",
        "--set",
        "scientific.downsamplings=['maxpool']",
        "--set",
        "scientific.paddings=['same']",
        "--set",
        "nuisance.learning_rate=[0.001, 1e12]",
    ]
    assert main(args) == 0
    runs = mlflow.search_runs(experiment_names=["smoke"])
    tune = runs[runs["tags.cnnstudy.stage"] == "tune"].set_index("params.learning_rate")
    diverged = tune.loc[["1000000000000.0"]]  # one run per tuning seed
    assert len(diverged) == 2 and (diverged["status"] == "FAILED").all()
    assert (diverged["tags.cnnstudy.failure"] == "nan loss").all()
    rep = runs[runs["tags.cnnstudy.stage"] == "replicate"]
    assert len(rep) == 1 and rep.iloc[0]["status"] == "FINISHED"
    assert rep.iloc[0]["params.learning_rate"] == "0.001"  # the best finite setting


def test_same_seed_gives_same_data_order_for_every_variant(monkeypatch):
    splits = load_splits("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, limit=300)
    settings = load_study(ROOT / "experiments/digits.toml").settings({"learning_rate": 1e-3})
    served: list[np.ndarray] = []
    original = training.SeededBatches.__getitem__

    def recording(self, i):
        x, y = original(self, i)
        served.append(y.copy())
        return x, y

    monkeypatch.setattr(training.SeededBatches, "__getitem__", recording)

    def run(name, seed):
        served.clear()
        model = build_model(variants()[name], settings, (8, 8, 1), 10)
        compile_model(model, settings)
        training.fit(model, splits, seed=seed, epochs=2, batch_size=32, augment_shift=1)
        return np.concatenate(served)

    a, b, c = run("same_maxpool", 0), run("valid_stride", 0), run("same_maxpool", 1)
    np.testing.assert_array_equal(a, b)  # same seed: same stream, whatever the variant
    assert not np.array_equal(a, c)  # another seed: another order
    # each epoch visits the training set in that epoch's seeded permutation (Keras also
    # peeks at a batch or two to learn the data's shape; those don't change the order)
    stream = a.astype(np.int8).tobytes()
    for order in training.epoch_order(0, 2, len(splits.y_train)):
        assert splits.y_train[order].astype(np.int8).tobytes() in stream


@pytest.mark.parametrize("nan_check", ["epoch", "batch"])
def test_a_nan_loss_fails_the_fit_and_only_the_batch_check_hooks_every_batch(
    monkeypatch, nan_check
):
    """Both checks raise DivergedError at the epoch the loss went NaN; only "batch" gives
    Keras a per-batch callback (which stops its asynchronous dispatch of steps)."""
    import keras

    splits = load_splits("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, limit=300)
    settings = load_study(ROOT / "experiments/digits.toml").settings({"learning_rate": 1e12})
    model = compile_model(
        build_model(variants()["same_maxpool"], settings, (8, 8, 1), 10), settings
    )
    seen = []
    original = model.fit

    def recording(*args, **kwargs):
        seen.extend(kwargs["callbacks"])
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "fit", recording)
    with pytest.raises(training.DivergedError) as err:
        training.fit(model, splits, seed=0, epochs=3, batch_size=32, nan_check=nan_check)
    assert err.value.epoch == 0
    base = keras.callbacks.Callback
    per_batch = [
        c for c in seen
        if type(c).on_batch_end is not base.on_batch_end
        or type(c).on_train_batch_end is not base.on_train_batch_end
    ]  # fmt: skip
    assert len(per_batch) == (nan_check == "batch")
    with pytest.raises(ValueError, match="nan_check"):
        training.fit(model, splits, seed=0, epochs=1, batch_size=32, nan_check="step")


def test_seeded_batches_serve_the_epochs_order_with_each_images_own_shift():
    """The epoch laid out at once serves, batch by batch, image order[k] shifted by its own
    seeded offset: the stream a per-image reference computes."""
    from cnnstudy.nets.imageops import random_shifts, shift

    rng = np.random.default_rng(0)
    x, y = rng.random((50, 6, 6, 2), dtype=np.float32), np.arange(50)
    batches = training.SeededBatches(x, y, batch_size=8, seed=3, shift=1)
    assert len(batches) == 7  # the last batch is short
    for epoch in (0, 2):
        batches.set_epoch(epoch)
        order = training.epoch_order_at(3, epoch, 50)
        dy, dx = random_shifts(np.random.default_rng([3, epoch, 1]), 50, 1)
        xs, ys = zip(*(batches[i] for i in range(len(batches))), strict=True)
        np.testing.assert_array_equal(np.concatenate(ys), order)
        expected = np.stack([shift(x[k : k + 1], dy[k], dx[k])[0] for k in order])
        np.testing.assert_array_equal(np.concatenate(xs), expected)
        assert (dy != 0).any() and not np.array_equal(expected, x[order])  # shifts did happen


def _stand_in(study, n=48):
    """Offline data for offline studies; random images of the real shape otherwise."""
    if REGISTRY[study.dataset].offline:
        f = study.fixed
        splits = load_splits(
            study.dataset,
            val_fraction=f["val_fraction"],
            test_fraction=f["test_fraction"],
            split_seed=0,
            limit=200,
        )
        return pad_splits(splits, f["pad_input"])  # as study_splits does
    rng = np.random.default_rng(0)
    x = rng.random((n, *study.input_shape), dtype=np.float32)
    y = np.arange(n) % study.n_classes
    return Splits(study.dataset, x, y, x[:16], y[:16], x[:16], y[:16])


_TRAINED: set[str] = set()  # models already trained by an earlier study file: not again


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_study_file_runs_a_tiny_trial_per_variant(path):
    study = load_study(path, ["fixed.epochs=2"])  # 2: a study's warm-up epoch fits
    splits = _stand_in(study)
    assert splits.input_shape == study.input_shape
    for variant in study.variants:
        settings = study.settings({k: s.values[0] for k, s in study.nuisance.items()})
        key = repr((variant, study.input_shape, sorted(settings.items(), key=str)))
        if key in _TRAINED:  # e.g. fashion_mnist's model is default's: the same code path
            continue
        _TRAINED.add(key)
        steps = -(-len(splits.y_train) // 16)
        model = compile_model(
            build_model(variant, settings, study.input_shape, study.n_classes), settings, steps
        )
        fit = training.fit(
            model, splits, seed=0, epochs=2, batch_size=16, augment_shift=settings["augment_shift"]
        )
        assert np.isfinite(fit.history["loss"][0])
        assert 0.0 <= training.evaluate(model, splits.x_test, splits.y_test)["accuracy"] <= 1.0


@pytest.mark.parametrize("n", [10, 300, 1000])
def test_timed_predict_scores_every_image_once(n):
    splits = load_splits("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0)
    settings = load_study(ROOT / "experiments/digits.toml").settings({"learning_rate": 1e-3})
    model = build_model(variants()["same_maxpool"], settings, (8, 8, 1), 10)
    x = np.resize(splits.x_test, (n, 8, 8, 1))
    scores, rate = training.timed_predict(model, x)
    np.testing.assert_allclose(scores, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert rate > 0


def test_eta_weighs_each_trial_by_its_epochs():
    """Short tuning trials must not make the replicates look cheap: 20 s for a 2-epoch trial
    with 10 epochs of trials left is 100 s to go, not 2 trials x 20 s."""
    import io
    import time

    from cnnstudy.run.sweep import Progress

    out = io.StringIO()
    progress = Progress(total=3, stream=out, work=12, started=time.perf_counter() - 20)
    progress.trial("tune", "same_maxpool", "lr=0.01", "val_acc 0.9", 20.0, epochs=2)
    assert "eta 1:40" in out.getvalue()
    progress.skip(1, epochs=2)  # a tuning trial finished by an earlier run
    assert (progress.done, progress.work_done, progress.work_here) == (2, 4, 2)
