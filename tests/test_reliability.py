"""Reliability: kill -9 and resume, two sweeps at once, NaN trials in the report, safe defaults."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from cnnstudy.cli import build_parser, main
from tests.helpers import ROOT

SHRUNK = [
    "--set",
    "study.limit=400",
    "--set",
    "study.seeds=2",
    "--set",
    "scientific.downsamplings=['maxpool']",
]


def _env(tmp: Path) -> dict:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
        "CNNSTUDY_STATE_DIR": str(tmp / "state"),
        "PYTHONUNBUFFERED": "1",
    }


def _sweep_cmd(study: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cnnstudy.cli", "sweep", study, *SHRUNK, *extra]


def _runs(tmp: Path, experiment: str = "smoke") -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    return mlflow.search_runs(experiment_names=[experiment])


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - store not created yet
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _tuner_trials(tmp: Path) -> dict[str, dict]:
    out = {}
    for path in (tmp / "state").rglob("trial.json"):
        trial = json.loads(path.read_text())
        out[str(path.relative_to(tmp))] = trial
    return out


@pytest.fixture
def study_dir(tmp_path):
    (tmp_path / "experiments").mkdir()
    smoke = (ROOT / "experiments/smoke.toml").read_text()
    (tmp_path / "experiments/smoke.toml").write_text(smoke)
    (tmp_path / "experiments/other.toml").write_text(
        smoke.replace('name = "smoke"', 'name = "other"')
    )
    return tmp_path


def test_kill_9_mid_trial_then_resume_finishes_only_the_missing_trials(study_dir):
    tmp, env = study_dir, _env(study_dir)
    cmd = _sweep_cmd("experiments/smoke.toml", "--set", "fixed.epochs=3")
    proc = subprocess.Popen(
        cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def mid_trial():
        runs = _runs(tmp)
        trials = runs[runs["tags.cnnstudy.kind"] == "trial"]
        running = trials[
            (trials["status"] == "RUNNING")
            & trials.get("metrics.val_accuracy", pd.Series(dtype=float)).notna()
        ]
        finished = trials[trials["status"] == "FINISHED"]
        if len(finished) >= 2 and len(running) == 1:
            return running.iloc[0]["run_id"]
        return None

    victim = _wait(mid_trial, 180, "a trial in the middle of its epochs")
    before = _runs(tmp)
    done_before = before[before["status"] == "FINISHED"].set_index("run_id")
    tuner_before = {k: v for k, v in _tuner_trials(tmp).items() if v["status"] == "COMPLETED"}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    resumed = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _runs(tmp)
    trials = after[after["tags.cnnstudy.kind"] == "trial"]
    # every (variant, seed) has exactly one FINISHED replicate run; every tuning point one too
    rep = trials[(trials["tags.cnnstudy.stage"] == "replicate") & (trials["status"] == "FINISHED")]
    assert sorted(map(tuple, rep[["params.variant", "params.seed"]].values)) == [
        ("same_maxpool", "0"),
        ("same_maxpool", "1"),
        ("valid_maxpool", "0"),
        ("valid_maxpool", "1"),
    ]
    tune = trials[(trials["tags.cnnstudy.stage"] == "tune") & (trials["status"] == "FINISHED")]
    assert len(tune) == 2
    # the interrupted attempt is KILLED, not RUNNING forever; nothing else is left open
    assert after.set_index("run_id").loc[victim, "status"] == "KILLED"
    assert (after["status"] != "RUNNING").all()
    assert len(trials) == 6 + 1
    # finished runs are untouched: same ids, same metrics
    for run_id, row in done_before.iterrows():
        if row["tags.cnnstudy.kind"] != "trial":
            continue
        now = after.set_index("run_id").loc[run_id]
        assert now["status"] == "FINISHED"
        assert now["metrics.val_accuracy"] == row["metrics.val_accuracy"]
    # keras-tuner's on-disk state: completed trials unchanged
    tuner_after = _tuner_trials(tmp)
    for path, trial in tuner_before.items():
        assert tuner_after[path] == trial
    assert sum(t["status"] == "COMPLETED" for t in tuner_after.values()) == 6


def test_two_sweeps_at_once_into_one_store(study_dir):
    tmp, env = study_dir, _env(study_dir)
    first = subprocess.Popen(
        _sweep_cmd("experiments/smoke.toml"),
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = _wait(
        lambda: [p for p in (tmp / "state").rglob("*.lock") if p.read_text().strip()],
        120,
        "the first sweep to take its lock",
    )
    # the same study again refuses at once, naming the holder, and writes nothing
    same = subprocess.run(
        _sweep_cmd("experiments/smoke.toml"),
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert same.returncode == 2
    assert "already running" in same.stderr and str(first.pid) in same.stderr
    assert "Traceback" not in same.stderr
    # a different study runs alongside, into the same sqlite store
    other = subprocess.run(
        _sweep_cmd("experiments/other.toml"),
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert other.returncode == 0, other.stderr[-2000:]
    for name in ("smoke", "other"):
        runs = _runs(tmp, name)
        assert (runs["status"] == "FINISHED").all()
        assert len(runs) == 1 + 2 + 4  # parent + tuning + replicate
    assert lock


def test_nan_trials_are_listed_in_the_report_and_excluded(isolated_store):
    (isolated_store / "experiments/smoke.toml").write_text(
        (ROOT / "experiments/smoke.toml").read_text()
    )
    args = [
        "sweep",
        "experiments/smoke.toml",
        *SHRUNK,
        "--set",
        "nuisance.learning_rate=[0.001, 1e12]",
    ]
    assert main(args) == 0
    assert main(["report", "experiments/smoke.toml"]) == 0
    md = (isolated_store / "results/smoke/report.md").read_text()
    assert "## Failed trials (excluded from every statistic)" in md
    assert md.count("nan loss") == 2  # one diverged tuning point per variant
    summary = pd.read_csv(isolated_store / "results/smoke/summary.csv")
    assert (summary["n"] == 2).all()


def test_servers_bind_to_loopback_by_default():
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    makefile = (ROOT / "Makefile").read_text()
    assert "0.0.0.0" not in makefile


def test_study_files_are_data_not_code(write_study, capsys):
    path = write_study("[study]\nname = \"__import__('os').system('touch pwned')\"\n")
    assert main(["validate", str(path)]) == 2
    assert not Path("pwned").exists()
    assert "use letters, digits" in capsys.readouterr().err


def test_grid_search_resumes_after_an_interrupted_trial(tmp_path):
    """keras-tuner's GridSearch forgets its place in the grid on reload; our repair
    restores it, so a resumed grid runs every point exactly once."""
    import keras_tuner

    from cnnstudy.run.sweep import _repair_grid_cursor

    done: list[tuple] = []

    class Grid(keras_tuner.GridSearch):
        def __init__(self, stop_after, **kwargs):
            self.stop_after = stop_after
            super().__init__(**kwargs)
            _repair_grid_cursor(self.oracle)

        def run_trial(self, trial, *args, **kwargs):
            if len(done) == self.stop_after:
                raise KeyboardInterrupt  # the process dies mid-trial
            done.append((trial.hyperparameters["a"], trial.hyperparameters["b"]))
            return {"score": 0.0}

    def tuner(stop_after):
        hp = keras_tuner.HyperParameters()
        hp.Choice("a", [1, 2, 3])
        hp.Choice("b", [10, 20])
        return Grid(
            stop_after,
            hyperparameters=hp,
            objective=keras_tuner.Objective("score", "max"),
            directory=str(tmp_path),
            project_name="grid",
            overwrite=False,
        )

    with pytest.raises(KeyboardInterrupt):
        tuner(stop_after=2).search(verbose=0)
    tuner(stop_after=-1).search(verbose=0)
    assert sorted(done) == [(a, b) for a in (1, 2, 3) for b in (10, 20)]
