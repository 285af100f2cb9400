"""The shape table of a built model, read from Keras itself."""

from __future__ import annotations

from typing import Any

import keras

from cnnstudy.architecture import LAYER_COLUMNS, LayerSpec, layer_row, plan, shape_rows
from cnnstudy.models import build_model
from cnnstudy.variants import Variant

COLUMNS = LAYER_COLUMNS


def _dims(shape: tuple) -> tuple[int, ...]:
    return tuple(int(d) for d in shape[1:])  # drop the batch axis


def keras_rows(
    model: keras.Model, specs: list[LayerSpec], variant: Variant
) -> list[dict[str, Any]]:
    """One row per layer; shapes and params come from Keras, MACs from those shapes."""
    rows = []
    for layer, spec in zip(model.layers, specs, strict=True):
        in_shape, out_shape = _dims(layer.input.shape), _dims(layer.output.shape)
        macs = 0
        if spec.kind == "conv":
            macs = out_shape[0] * out_shape[1] * out_shape[2] * spec.kernel**2 * in_shape[2]
        elif spec.kind == "dense":
            macs = in_shape[0] * out_shape[0]
        row = layer_row(spec, in_shape, out_shape, layer.count_params(), macs)
        rows.append({"variant": variant.name, **row, "layer": layer.name})
    return rows


def variant_table(
    variant: Variant,
    settings: dict[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
    model: keras.Model | None = None,
) -> list[dict[str, Any]]:
    """The layer table of ``model`` (built here if not given) for this variant."""
    specs = plan(variant, settings, n_classes)
    model = model or build_model(variant, settings, input_shape, n_classes)
    return keras_rows(model, specs, variant)


def formula_table(
    variant: Variant, settings: dict[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> list[dict[str, Any]]:
    rows = shape_rows(plan(variant, settings, n_classes), input_shape)
    return [{"variant": variant.name, **row} for row in rows]


def mismatches(keras_table: list[dict], formula: list[dict]) -> list[str]:
    """Rows where Keras and the formulas disagree on shape or params (should be none)."""
    bad = []
    for k, f in zip(keras_table, formula, strict=True):
        for col in ("input_shape", "output_shape", "params"):
            if k[col] != f[col]:
                bad.append(f"{k['variant']}/{k['layer']}: {col} keras={k[col]} formula={f[col]}")
    return bad


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
