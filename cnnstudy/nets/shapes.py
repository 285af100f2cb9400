"""The shape table of a built model, read from Keras itself (MACs from core.layers)."""

from __future__ import annotations

from typing import Any

import keras

from cnnstudy.core.layers import LAYER_COLUMNS, layer_row, shape_rows
from cnnstudy.core.variants import Variant, plan
from cnnstudy.nets.models import build_model

COLUMNS = LAYER_COLUMNS


def _dims(shape: tuple) -> tuple[int, ...]:
    return tuple(int(d) for d in shape[1:])  # drop the batch axis


def variant_table(
    variant: Variant,
    settings: dict[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
    model: keras.Model | None = None,
) -> list[dict[str, Any]]:
    """One row per layer of ``model`` (built here if not given): shapes and params from
    Keras, MACs from those shapes."""
    specs = plan(variant, settings, n_classes)
    model = model or build_model(variant, settings, input_shape, n_classes)
    rows = []
    for layer, spec in zip(model.layers, specs, strict=True):
        row = layer_row(
            spec, _dims(layer.input.shape), _dims(layer.output.shape), layer.count_params()
        )
        rows.append({"variant": variant.name, **row, "layer": layer.name})
    return rows


def formula_table(
    variant: Variant, settings: dict[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> list[dict[str, Any]]:
    rows = shape_rows(plan(variant, settings, n_classes), input_shape)
    return [{"variant": variant.name, **row} for row in rows]


def mismatches(keras_table: list[dict], formula: list[dict]) -> list[str]:
    """Rows where Keras and the formulas disagree on shape, params or MACs (should be none)."""
    bad = []
    for k, f in zip(keras_table, formula, strict=True):
        for col in ("input_shape", "output_shape", "params", "macs"):
            if k[col] != f[col]:
                bad.append(f"{k['variant']}/{k['layer']}: {col} keras={k[col]} formula={f[col]}")
    return bad


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
