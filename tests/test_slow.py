"""Real training at the default study's full length (make test-slow): minutes, not seconds."""

import shutil

import pandas as pd
import pytest

from cnnstudy.cli import main
from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_default_study_learns_and_reports(isolated_store):
    shutil.copy(ROOT / "experiments/default.toml", "experiments/default.toml")
    assert main(["sweep", "experiments/default.toml", "--set", "study.seeds=3"]) == 0
    assert main(["report", "experiments/default.toml"]) == 0
    summary = pd.read_csv(isolated_store / "results/default/summary.csv")
    assert len(summary) == 6 and (summary["n"] == 3).all()
    assert (summary["mean_test_accuracy"] > 0.90).all()  # 5 epochs on 3500 MNIST digits
    claims = pd.read_csv(isolated_store / "results/default/claims.csv")
    assert len(claims) == 6
