"""Who this process is in keras-tuner's distributed mode: a chief, a worker, or neither.

The roles are set through the environment by ``run.distributed`` (or by hand, across
machines). Between the two stages the chief publishes each variant's best nuisance values
on the parent run (tag ``cnnstudy.best_nuisance``) and the workers wait for them.
"""

from __future__ import annotations

import json
import os
import time

BEST_TAG = "cnnstudy.best_nuisance"
ROLE_ENV = "CNNSTUDY_ROLE"
PARENT_ENV = "CNNSTUDY_PARENT_RUN_ID"


def stage_port(stage_index: int) -> None:
    """Point keras-tuner at this stage's oracle (the base port is the tune stage's)."""
    base = int(
        os.environ.setdefault("CNNSTUDY_ORACLE_BASE_PORT", os.environ["KERASTUNER_ORACLE_PORT"])
    )
    os.environ["KERASTUNER_ORACLE_PORT"] = str(base + stage_index)


def role() -> str | None:
    return os.environ.get(ROLE_ENV)


def tuner_id() -> str:
    return os.environ.get("KERASTUNER_TUNER_ID", "local")


# ---------------------------------------------------------------- between the stages


def publish_best(tracker, best: dict) -> None:  # noqa: ANN001
    tracker.set_parent_tag(BEST_TAG, json.dumps(best, sort_keys=True))


def wait_for_best(tracker, timeout: float = 24 * 3600) -> dict:  # noqa: ANN001
    """A worker waits for the chief to finish the tuning stage and publish the winners."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        published = tracker.parent_tag(BEST_TAG)
        if published is not None:
            return json.loads(published)
        time.sleep(1.0)
    raise TimeoutError("the chief never published the tuning results")
