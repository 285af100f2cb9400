"""The smoke study under whatever KERAS_BACKEND is set (`make test-backends` runs it under
TensorFlow and JAX; `make test` under PyTorch). Model and training code use Keras 3 APIs only."""

import os
import shutil

import keras
import mlflow
import pytest

from cnnstudy.cli import main
from tests.helpers import ROOT

pytestmark = pytest.mark.backends


def test_smoke_sweep_runs_on_this_backend(isolated_store):
    shutil.copy(ROOT / "experiments/smoke.toml", "experiments/smoke.toml")
    args = ["sweep", "experiments/smoke.toml", "--set", "study.limit=300"]
    hits = []
    if keras.backend.backend() == "jax":  # compiled steps are reused across trials
        import jax

        jax.monitoring.register_event_listener(
            lambda event, **_: (
                hits.append(event) if "compilation_cache/cache_hits" in event else None
            )
        )
    assert main(args) == 0
    if keras.backend.backend() == "jax":
        assert any((isolated_store / "state/jax-cache").iterdir())
        assert len(hits) > 10  # e.g. the second tuning seed of a variant compiles nothing new
    runs = mlflow.search_runs(experiment_names=["smoke"])
    parent = runs[runs["tags.cnnstudy.kind"] == "sweep"].iloc[0]
    assert parent["tags.cnnstudy.backend"] == keras.backend.backend()
    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "torch")
    trials = runs[runs["tags.cnnstudy.kind"] == "trial"]
    assert len(trials) == 6 * (2 + 1)  # 6 variants x (1 lr x 2 tuning seeds + 1 seed)
    assert (trials["status"] == "FINISHED").all()
    assert trials["metrics.test_accuracy"].notna().sum() == 6


def test_no_tensorflow_in_model_and_training_code():
    for name in (
        "nets/models.py",
        "nets/training.py",
        "nets/probes.py",
        "nets/imageops.py",
        "nets/data.py",
        "nets/timing.py",
        "core/variants.py",
        "core/layers.py",
        "run/sweep.py",
    ):
        text = (ROOT / "cnnstudy" / name).read_text()
        assert "import tensorflow" not in text and "tf." not in text, name
