"""Compute matching: scale a variant's stage widths so its MACs (or params) match another's.

``[study] match = "macs"`` asks each variant to cost what the study's first variant costs,
within ``TOLERANCE``: then "stride vs pool" compares designs at equal compute rather than
at equal architecture. One factor scales every stage width of a variant (widths rounded to
whole filters), so the shape of the network is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnstudy.core.layers import shape_rows
from cnnstudy.core.variants import Variant, plan

TOLERANCE = 0.05
MODES = ("none", "macs", "params")
# scale factors tried: 0.1x .. 10x in 1% steps (rounding makes the cost a step function)
FACTORS = np.exp(np.linspace(np.log(0.1), np.log(10.0), 464))


def cost(
    variant: Variant, settings: dict[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> dict[str, int]:
    """Total MACs and parameters of the variant under these settings."""
    rows = shape_rows(plan(variant, settings, n_classes), input_shape)
    return {"macs": sum(r["macs"] for r in rows), "params": sum(r["params"] for r in rows)}


def scaled(widths: list[int], factor: float) -> list[int]:
    return [max(1, round(w * factor)) for w in widths]


def match_widths(
    variant: Variant,
    settings: dict[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
    metric: str,
    target: float,
) -> tuple[list[int], float]:
    """The scaled widths whose ``metric`` is closest to ``target``, and the relative error."""
    best: tuple[float, list[int]] = (np.inf, list(settings["stage_widths"]))
    seen: set[tuple[int, ...]] = set()
    for factor in FACTORS:
        widths = scaled(settings["stage_widths"], float(factor))
        if tuple(widths) in seen:
            continue
        seen.add(tuple(widths))
        value = cost(variant, {**settings, "stage_widths": widths}, input_shape, n_classes)[metric]
        error = value / target - 1
        if abs(error) < abs(best[0]):
            best = (error, widths)
    return best[1], float(best[0])


def matched_widths(
    variants: list[Variant],
    settings: dict[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
    mode: str,
) -> dict[str, tuple[list[int], float]]:
    """Each variant's stage widths (and relative cost error) under ``match = mode``.

    The first variant keeps the study's widths and sets the target.
    """
    if mode == "none" or not variants:
        return {v.name: (list(settings["stage_widths"]), 0.0) for v in variants}
    target = cost(variants[0], settings, input_shape, n_classes)[mode]
    out = {variants[0].name: (list(settings["stage_widths"]), 0.0)}
    for v in variants[1:]:
        out[v.name] = match_widths(v, settings, input_shape, n_classes, mode, target)
    return out
