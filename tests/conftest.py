import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "torch")  # as the Makefile

import mlflow  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import ROOT, TINY  # noqa: E402


@pytest.fixture
def write_study(tmp_path):
    """Write a study file body to a temp .toml and return its path."""

    def _write(body: str, name: str = "study.toml") -> Path:
        path = tmp_path / name
        path.write_text(body)
        return path

    return _write


@pytest.fixture
def isolated_store(tmp_path, monkeypatch):
    """A fresh sqlite MLflow store, tuner state dir and results dir for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("CNNSTUDY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    return tmp_path


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """The smoke study shrunk to 4 variants x 2 seeds, run twice (the second is a re-run)."""
    from cnnstudy.cli import main

    tmp = tmp_path_factory.mktemp("sweep")
    shutil.copytree(ROOT / "experiments", tmp / "experiments")
    old = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "CNNSTUDY_STATE_DIR")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ["CNNSTUDY_STATE_DIR"] = str(tmp / "state")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        assert main(["sweep", "experiments/smoke.toml", *TINY]) == 0
        first = mlflow.search_runs(experiment_names=["smoke"])
        assert main(["sweep", "experiments/smoke.toml", *TINY]) == 0
        second = mlflow.search_runs(experiment_names=["smoke"])
    finally:
        os.chdir(cwd)
    try:
        yield tmp, first, second
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
