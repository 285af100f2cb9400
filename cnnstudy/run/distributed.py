"""`cnnstudy sweep --workers n`: keras-tuner's own distributed mode, on one machine.

The orchestrator starts an MLflow tracking server (127.0.0.1) over the study's store, opens
the sweep's parent run, then starts a keras-tuner chief (the oracle: KERASTUNER_TUNER_ID=chief)
and n workers, which run the trials and log them to the server as children of the parent.
Each stage has its own oracle port (tune: PORT, replicate: PORT + 1), so a worker can never
ask the previous stage's oracle for work. Between the stages the chief publishes each
variant's best nuisance values on the parent run (tag ``cnnstudy.best_nuisance``).

At the end it stops everything it started, by process id, and says what ran where. If
workers die, it stops the chief and names the missing trials; the same command resumes them
(the chief's oracle state re-queues unfinished trials).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cnnstudy.run.lifecycle import finish_sweep, open_sweep
from cnnstudy.run.roles import PARENT_ENV, ROLE_ENV
from cnnstudy.tracking import tracking_uri, trial_runs, trials_by_worker
from cnnstudy.tracking.store import ensure_experiment, get_client


def free_port(count: int = 1) -> int:
    """A port p such that p .. p+count-1 are free on 127.0.0.1 now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# ---------------------------------------------------------------- the orchestrator


class Processes:
    """What this run started, so that it stops exactly those, by pid."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
        handle = log.open("w")
        proc = subprocess.Popen(
            cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        pids = {n: p.pid for n, p in self.procs.items()}
        (log.parent / "pids.json").write_text(json.dumps(pids))
        return proc

    def stop(self, name: str, grace: float = 10.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def start_mlflow_server(procs: Processes, store_uri: str, log_dir: Path) -> str:
    port = free_port()
    artifacts = Path("mlartifacts").resolve()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    procs.start("mlflow-server", cmd, dict(os.environ), log_dir / "mlflow-server.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if procs.procs["mlflow-server"].poll() is not None:
            raise RuntimeError(f"the MLflow server exited; see {log_dir / 'mlflow-server.log'}")
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read().strip() == b"OK":
                return url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the MLflow server did not start; see {log_dir / 'mlflow-server.log'}")


def worker_threads(n_workers: int) -> dict[str, str]:
    """Thread counts for each of n workers on this machine (TensorFlow reads these), and
    under JAX, GPU memory taken as needed: JAX's default takes 75% of the GPU for the first
    process, and a second worker on the same GPU would then run out (unless the user set
    JAX's memory variables themselves)."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    out = {
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "OMP_NUM_THREADS": threads,
    }
    jax_memory = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION")
    import keras

    if keras.backend.backend() == "jax" and not any(v in os.environ for v in jax_memory):
        out["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return out


def run_distributed(argv: list[str], n_workers: int, study, log_dir: Path) -> int:  # noqa: ANN001
    """Start the server, the chief and the workers; wait; stop them; report."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    store = tracking_uri()
    started = time.perf_counter()
    try:
        # created on the store itself, the experiment keeps its artifacts in ./mlartifacts
        # (not the server's mlflow-artifacts:/), so `cnnstudy report` reads them afterwards
        ensure_experiment(get_client(), study.name)
        url = start_mlflow_server(procs, store, log_dir)
        os.environ["MLFLOW_TRACKING_URI"] = url
        tracker, finished = open_sweep(study, **{"cnnstudy.workers": str(n_workers)})
        if finished:
            print(f"sweep {tracker.sweep_id} is already complete; nothing to train.")
            return 0
        oracle_port = free_port(2)
        base_env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            PARENT_ENV: tracker.parent_run_id,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(oracle_port),
            "PYTHONUNBUFFERED": "1",
            # share the cores instead of oversubscribing them: each worker's TensorFlow gets
            # its part (on this 2-core CPU one thread trains these small nets as fast as two)
            **worker_threads(n_workers),
        }
        cmd = [sys.executable, "-m", "cnnstudy.cli", "sweep", *argv]
        print(
            f"MLflow server {url} over {store}; oracle on 127.0.0.1:{oracle_port} (+1); "
            f"chief + {n_workers} workers; logs in {log_dir}/",
            flush=True,
        )
        chief = procs.start(
            "chief",
            cmd,
            {**base_env, ROLE_ENV: "chief", "KERASTUNER_TUNER_ID": "chief"},
            log_dir / "chief.log",
        )
        workers = {
            f"worker{i}": procs.start(
                f"worker{i}",
                cmd,
                {**base_env, ROLE_ENV: "worker", "KERASTUNER_TUNER_ID": f"worker{i}"},
                log_dir / f"worker{i}.log",
            )
            for i in range(n_workers)
        }
        _watch(chief, workers, log_dir)
        complete = _report(tracker, study, time.perf_counter() - started)
        out = finish_sweep(tracker, study, "FINISHED" if complete else "FAILED")
        if out:
            print(f"  runs: {out}")
        return 0 if complete else 1
    finally:
        procs.stop_all()
        print(
            "stopped: " + ", ".join(f"{n} (pid {p.pid})" for n, p in procs.procs.items()),
            flush=True,
        )


def _watch(chief: subprocess.Popen, workers: dict[str, subprocess.Popen], log_dir: Path) -> None:
    """Relay progress until the chief and the workers are done (or the workers are dead)."""
    seen: set[str] = set()
    while True:
        time.sleep(1.0)
        for line in _new_progress(log_dir, list(workers), seen):
            print(line, flush=True)
        if chief.poll() is not None:
            for w in workers.values():
                try:
                    w.wait(timeout=60 if chief.returncode == 0 else 1)
                except subprocess.TimeoutExpired:
                    pass
            return
        if all(w.poll() is not None for w in workers.values()):
            dead = [n for n, w in workers.items() if w.returncode != 0]
            if not dead:  # every trial handed out and done: the chief notices within ~20 s
                try:
                    chief.wait(timeout=60)
                    return
                except subprocess.TimeoutExpired:
                    pass
            print(
                f"all workers have exited ({', '.join(dead) or 'none'} with an error) while "
                "the chief still waits for trials; stopping it.",
                file=sys.stderr,
            )
            return


def _new_progress(log_dir: Path, names: list[str], seen: set[str]) -> list[str]:
    """Trial lines the workers logged since the last look."""
    out = []
    for name in names:
        path = log_dir / f"{name}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("[") and line not in seen:
                seen.add(line)
                out.append(line)
    return out


def _report(tracker, study, seconds: float) -> bool:  # noqa: ANN001
    """Say what ran where, from MLflow; True when every trial has ended (FINISHED/FAILED)."""
    runs = trial_runs(tracker.parent(), stage=None)
    done = runs[runs["status"].isin(["FINISHED", "FAILED"])] if not runs.empty else runs
    expected = study.n_trials
    complete = len(done) >= expected
    print(
        f"\n{'done' if complete else 'INCOMPLETE'} in {seconds:.0f}s: {len(done)}/{expected} "
        "trials finished."
    )
    if not runs.empty:
        counts = trials_by_worker(tracker.client, tracker.experiment_id, tracker.parent_run_id)
        print("  ran where: " + ", ".join(f"{w}: {n} trials" for w, n in sorted(counts.items())))
    if not complete:
        print(
            f"  missing: {expected - len(done)} trials. Run the same command again to finish "
            "them; finished trials are kept.",
            file=sys.stderr,
        )
    return complete
