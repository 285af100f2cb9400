"""One sweep of a given study configuration at a time.

Two processes sweeping the same study (same fingerprint) would share keras-tuner's state
and race to create the MLflow parent run. The second one refuses at once instead. The lock
is an ``flock`` on a file, so the kernel releases it when the holder dies, even by kill -9.
Sweeps of *different* studies (or configurations) run side by side into one store.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


class SweepBusyError(RuntimeError):
    """Another live process is sweeping this study configuration."""


@contextmanager
def sweep_lock(path: Path, study_name: str):  # noqa: ANN201
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole sweep
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SweepBusyError(
            f"another sweep of study {study_name!r} with this configuration is already running "
            f"(pid {holder}, lock {path}). Wait for it to finish, or stop it; then run the same "
            "command again to resume. (A different study or --set override can run alongside.)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
