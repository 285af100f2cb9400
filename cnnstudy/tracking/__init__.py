"""Every MLflow write and read of cnnstudy: the store, the sweep's runs, provenance, queries."""

from cnnstudy.tracking.provenance import device_description, git_commit, package_versions
from cnnstudy.tracking.queries import (
    export_runs,
    find_sweep,
    has_trials,
    trial_runs,
    trials_by_worker,
    wait_for_open_sweep,
)
from cnnstudy.tracking.store import get_client, tracking_uri
from cnnstudy.tracking.sweep_runs import SweepTracker, log_report

__all__ = [
    "SweepTracker",
    "device_description",
    "export_runs",
    "find_sweep",
    "get_client",
    "git_commit",
    "has_trials",
    "log_report",
    "package_versions",
    "trial_runs",
    "trials_by_worker",
    "tracking_uri",
    "wait_for_open_sweep",
]
