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

    # Freeze the sweep (SIGSTOP) as soon as a trial is seen mid-epochs, then check that it is
    # still mid-trial: under a fast backend a short trial can finish between the query and the
    # kill. If it finished, let the sweep go on and wait for the next one.
    deadline = time.time() + 180
    while True:
        victim = _wait(
            mid_trial, max(deadline - time.time(), 1), "a trial in the middle of its epochs"
        )
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            still_running = _runs(tmp).set_index("run_id").loc[victim, "status"] == "RUNNING"
        except Exception:  # noqa: BLE001 - store locked by the frozen writer: try the next trial
            still_running = False
        if still_running:
            break
        os.kill(proc.pid, signal.SIGCONT)
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
    assert len(tune) == 2 * 2  # 2 variants x 2 tuning seeds
    # the interrupted attempt is KILLED, not RUNNING forever; nothing else is left open
    assert after.set_index("run_id").loc[victim, "status"] == "KILLED"
    assert (after["status"] != "RUNNING").all()
    assert len(trials) == 8 + 1
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
    assert sum(t["status"] == "COMPLETED" for t in tuner_after.values()) == 4 + 4  # tune + rep


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
    # the same study again refuses at once, naming the holder, and writes nothing; the first
    # sweep is frozen meanwhile, so a fast backend cannot finish it before the second starts
    os.kill(first.pid, signal.SIGSTOP)
    try:
        same = subprocess.run(
            _sweep_cmd("experiments/smoke.toml"),
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.kill(first.pid, signal.SIGCONT)
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
        assert len(runs) == 1 + 2 * 2 + 4  # parent + tuning (2 tuning seeds) + replicate
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
    assert md.count("nan loss") == 4  # one diverged tuning point per variant and tuning seed
    summary = pd.read_csv(isolated_store / "results/smoke/summary.csv")
    assert (summary["n"] == 2).all()
    # the sweep run's description in MLflow is now the report's headline
    parent = mlflow.search_runs(
        experiment_names=["smoke"], filter_string="tags.`cnnstudy.kind` = 'sweep'"
    ).iloc[0]
    note = parent["tags.mlflow.note.content"]
    assert note.startswith("**Best variant: `")
    assert all(f"> {line}" in md for line in note.splitlines())


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


# ---------------------------------------------------------------- a missing or broken store


def _smoke_study(root: Path) -> None:
    (root / "experiments/smoke.toml").write_text((ROOT / "experiments/smoke.toml").read_text())


@pytest.mark.parametrize("command", ["report", "export"])
def test_reading_before_any_sweep_says_so_and_creates_no_store(isolated_store, capsys, command):
    _smoke_study(isolated_store)
    assert main([command, "experiments/smoke.toml"]) == 2
    err = capsys.readouterr().err
    assert "no MLflow store yet" in err and "make sweep" in err
    assert str(isolated_store / "mlflow.db") in err  # names the file it looked for
    assert "Traceback" not in err
    assert not (isolated_store / "mlflow.db").exists()  # not created empty
    assert not (isolated_store / "mlartifacts").exists()


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an sqlite database\n" + bytes(range(256)) * 16)


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("mine")


def _damaged(path: Path) -> None:
    """A real MLflow store with a run in it, then pages in the middle overwritten."""
    from cnnstudy.tracking.store import get_client

    client = get_client()
    run = client.create_run(client.create_experiment("smoke"))
    client.log_param(run.info.run_id, "variant", "same_maxpool")
    data = bytearray(path.read_bytes())
    data[8192:-4096] = bytes((b * 7 + 13) % 256 for b in data[8192:-4096])
    path.write_bytes(bytes(data))


def _snapshot(path: Path) -> dict:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir()}
    return {"": path.read_bytes()}


@pytest.mark.parametrize(
    "breakage, what",
    [
        (_garbage, "is damaged or not an SQLite database (file is not a database)"),
        (_directory, "is a directory"),
        (_damaged, "is damaged or not an SQLite database (database disk image is malformed)"),
    ],
    ids=["garbage", "directory", "damaged"],
)
def test_a_broken_store_is_named_with_the_way_out(
    isolated_store, capsys, monkeypatch, breakage, what
):
    _smoke_study(isolated_store)
    db = isolated_store / "mlflow.db"
    breakage(db)
    before = _snapshot(db)
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("`cnnstudy ui` started a server"))
    for args in (
        ["report", "experiments/smoke.toml"],
        ["export", "experiments/smoke.toml"],
        ["sweep", "experiments/smoke.toml", *SHRUNK],
        ["ui"],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: the MLflow tracking store "), (args, err)
        assert f"sqlite:///{db}" in err and what in err, (args, err)
        assert f"mv {db} {db}.broken" in err and "make sweep" in err, (args, err)
        assert "Traceback" not in err
    assert _snapshot(db) == before  # nothing written over, nothing lost
    assert not (isolated_store / "state").exists()  # the sweep stopped before anything ran
    # following the advice works: the store is moved aside and the next read says what to do
    db.rename(db.with_name("mlflow.db.broken"))
    assert main(["report", "experiments/smoke.toml"]) == 2
    assert "no MLflow store yet" in capsys.readouterr().err


def test_an_unreadable_store_says_permission_denied(isolated_store, monkeypatch):
    from cnnstudy.tracking.store import StoreError, check_store

    db = isolated_store / "mlflow.db"
    _garbage(db)
    db.chmod(0)
    try:
        with monkeypatch.context() as m:
            if os.geteuid() == 0:  # root reads any file: play an ordinary user
                m.setattr(os, "access", lambda *a, **k: False)
            with pytest.raises(StoreError) as caught:
                check_store()
    finally:
        db.chmod(0o644)
    message = str(caught.value)
    assert "permission denied" in message and str(db) in message and "chmod" in message
