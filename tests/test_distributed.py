"""keras-tuner's distributed mode: a chief, workers, one MLflow server, one sweep."""

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from tests.helpers import ROOT

ARGS = ["--set", "study.limit=300"]


def _run(tmp, *extra, timeout=400):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
        "CNNSTUDY_STATE_DIR": str(tmp / ".cnnstudy"),
    }
    cmd = [sys.executable, "-m", "cnnstudy.cli", "sweep", "experiments/smoke.toml", *ARGS, *extra]
    return subprocess.Popen(
        cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _trials(tmp):
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    exp = mlflow.tracking.MlflowClient().get_experiment_by_name("smoke")
    if exp is None:
        raise LookupError("no experiment yet")
    runs = mlflow.search_runs(experiment_ids=[exp.experiment_id])
    return runs, runs[runs["tags.cnnstudy.kind"] == "trial"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is not alive either
        return "Z" not in open(f"/proc/{pid}/stat").read().split()[2]
    except OSError:
        return False


@pytest.fixture
def smoke_dir(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments/smoke.toml").write_text((ROOT / "experiments/smoke.toml").read_text())
    return tmp_path


def test_two_worker_sweep_logs_every_trial_once(smoke_dir):
    proc = _run(smoke_dir, "--workers", "2")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    assert "18/18 trials finished" in out and "ran where:" in out  # 2 tuning seeds
    runs, trials = _trials(smoke_dir)
    assert len(trials) == 18 and (trials["status"] == "FINISHED").all()
    assert trials["tags.cnnstudy.trial_key"].is_unique
    assert set(trials["tags.cnnstudy.worker"]) <= {"worker0", "worker1"}
    parents = runs[runs["tags.cnnstudy.kind"] == "sweep"]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    assert (trials["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]).all()
    # everything it started is stopped
    pids = json.loads((smoke_dir / ".cnnstudy/logs/smoke/pids.json").read_text())
    assert set(pids) == {"mlflow-server", "chief", "worker0", "worker1"}
    assert not any(_alive(p) for p in pids.values())


def test_dead_worker_leaves_named_missing_trials_and_a_rerun_finishes_them(smoke_dir):
    proc = _run(smoke_dir, "--workers", "1", "--set", "fixed.epochs=2")
    pids_file = smoke_dir / ".cnnstudy/logs/smoke/pids.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            _, trials = _trials(smoke_dir)
            if (trials["status"] == "FINISHED").sum() >= 3:
                break
        except Exception:  # noqa: BLE001 - store not there yet
            pass
        time.sleep(0.5)
    os.kill(json.loads(pids_file.read_text())["worker0"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "INCOMPLETE" in out and "missing:" in out and "Run the same command again" in out
    rerun = _run(smoke_dir, "--workers", "1", "--set", "fixed.epochs=2")
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out[-3000:]
    runs, trials = _trials(smoke_dir)
    finished = trials[trials["status"] == "FINISHED"]
    assert len(finished) == 18 and finished["tags.cnnstudy.trial_key"].is_unique
    assert set(trials["status"]) <= {"FINISHED", "KILLED"}  # the dead worker's trial: KILLED
    assert len(runs[runs["tags.cnnstudy.kind"] == "sweep"]) == 1


def test_jax_workers_share_the_gpu_memory_unless_the_user_set_it(monkeypatch):
    import keras

    from cnnstudy.run.distributed import worker_threads

    for var in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
        monkeypatch.delenv(var, raising=False)
    backend = keras.backend.backend()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert worker_threads(2)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3")
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in worker_threads(2)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend if backend != "jax" else "torch")
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION")
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in worker_threads(2)
