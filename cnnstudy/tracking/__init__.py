"""Every MLflow write and read of cnnstudy: the store, the sweep's runs, provenance, queries."""

from cnnstudy.tracking.provenance import device_description, git_commit, package_versions
from cnnstudy.tracking.queries import (
    compare_runs_url,
    export_runs,
    find_sweep,
    has_trials,
    parent_table,
    trial_runs,
    trials_by_worker,
    wait_for_open_sweep,
)
from cnnstudy.tracking.store import StoreError, check_store, get_client, tracking_uri
from cnnstudy.tracking.sweep_runs import (
    SweepTracker,
    log_report,
    parallel_coordinates_url,
    set_note,
)

__all__ = [
    "StoreError",
    "SweepTracker",
    "check_store",
    "compare_runs_url",
    "device_description",
    "export_runs",
    "find_sweep",
    "get_client",
    "git_commit",
    "has_trials",
    "log_report",
    "package_versions",
    "parent_table",
    "parallel_coordinates_url",
    "set_note",
    "trial_runs",
    "trials_by_worker",
    "tracking_uri",
    "wait_for_open_sweep",
]
