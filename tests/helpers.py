"""Helpers shared by the tests (imported as ``tests.helpers``; conftest holds fixtures only)."""

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# every study file (an atlas file lists studies; it is not one)
EXPERIMENTS = sorted(
    p for p in (ROOT / "experiments").glob("*.toml") if "[atlas]" not in p.read_text()
)

# The smoke study shrunk to 4 variants x 2 seeds, with a gap head (so the border probe runs).
TINY = [
    "--set",
    "fixed.head=gap",
    "--set",
    "study.limit=300",
    "--set",
    "study.seeds=2",
    "--set",
    "fixed.epochs=2",
    "--set",
    "study.tune_epochs=1",  # tuning trials shorter than the replicates
    "--set",
    "scientific.downsamplings=['maxpool','stride']",
]


def random_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
