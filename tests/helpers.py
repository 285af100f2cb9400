"""Helpers shared by the tests (imported as ``tests.helpers``; conftest holds fixtures only)."""

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.toml"))

# The smoke study shrunk to 4 variants x 2 seeds, with a gap head (so the border probe runs).
TINY = [
    "--set",
    "fixed.head=gap",
    "--set",
    "study.limit=300",
    "--set",
    "study.seeds=2",
    "--set",
    "scientific.downsamplings=['maxpool','stride']",
]


def random_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
