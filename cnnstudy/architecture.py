"""The layer plan of a variant, and the textbook shape arithmetic, without Keras.

``plan`` lists the layers a variant is built from; ``models.build_model`` turns the
plan into Keras layers. The arithmetic here (output size, parameters, MACs) is what
the tests and the report check Keras's own shapes against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cnnstudy.variants import Variant

POOL_SIZE = 2


@dataclass(frozen=True)
class LayerSpec:
    name: str
    kind: str  # conv | maxpool | avgpool | flatten | dense | dropout
    units: int = 0  # filters (conv) or units (dense)
    kernel: int = 0
    stride: int = 1
    padding: str = "valid"
    activation: str | None = "relu"


def plan(variant: Variant, settings: dict[str, Any], n_classes: int) -> list[LayerSpec]:
    """INPUT -> [[CONV-RELU]*N -> DOWNSAMPLE]*M -> [FC-RELU]*K -> FC-softmax."""
    k, n, pad = settings["kernel_size"], settings["conv_per_stage"], variant.padding
    layers: list[LayerSpec] = []
    for s, width in enumerate(settings["stage_widths"], start=1):
        for c in range(1, n + 1):
            strided = (
                variant.downsample == "stride" and settings["stride_mode"] == "last_conv" and c == n
            )
            layers.append(LayerSpec(f"s{s}_conv{c}", "conv", width, k, 2 if strided else 1, pad))
        if variant.downsample in ("maxpool", "avgpool"):
            layers.append(
                LayerSpec(f"s{s}_{variant.downsample}", variant.downsample, 0, POOL_SIZE, POOL_SIZE)
            )
        elif settings["stride_mode"] == "extra_conv":
            layers.append(LayerSpec(f"s{s}_down", "conv", width, k, 2, pad))
    layers.append(LayerSpec("flatten", "flatten", activation=None))
    for i, units in enumerate(settings["dense_units"], start=1):
        layers.append(LayerSpec(f"fc{i}", "dense", units))
        if settings.get("dropout", 0) > 0:
            layers.append(LayerSpec(f"fc{i}_dropout", "dropout", activation=None))
    layers.append(LayerSpec("logits", "dense", n_classes, activation="softmax"))
    return layers


# ---------------------------------------------------------------- arithmetic


def conv_output_size(w: int, f: int, p: int, s: int) -> int:
    """The textbook (W - F + 2P)/S + 1, floored as frameworks do."""
    return (w - f + 2 * p) // s + 1


def output_size(w: int, f: int, s: int, padding: str) -> int:
    """Keras's rule: `valid` is (W - F)/S + 1; `same` is ceil(W/S) whatever F."""
    if padding == "same":
        return math.ceil(w / s)
    return conv_output_size(w, f, 0, s)


def conv_params(f: int, c_in: int, c_out: int) -> int:
    """F*F*C_in*C_out weights plus C_out biases."""
    return f * f * c_in * c_out + c_out


def shape_rows(specs: list[LayerSpec], input_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Each layer's input/output shape, params and MACs by the formulas alone."""
    h, w, c = input_shape
    flat: int | None = None
    rows = []
    for spec in specs:
        in_shape = (h, w, c) if flat is None else (flat,)
        params = macs = 0
        if spec.kind == "conv":
            h, w = (output_size(x, spec.kernel, spec.stride, spec.padding) for x in (h, w))
            params = conv_params(spec.kernel, c, spec.units)
            macs = max(h, 0) * max(w, 0) * spec.units * spec.kernel * spec.kernel * c
            c = spec.units
        elif spec.kind in ("maxpool", "avgpool"):
            h, w = (output_size(x, spec.kernel, spec.stride, "valid") for x in (h, w))
        elif spec.kind == "flatten":
            flat = h * w * c
        elif spec.kind == "dense":
            assert flat is not None
            params, macs = flat * spec.units + spec.units, flat * spec.units
            flat = spec.units
        out_shape = (h, w, c) if flat is None else (flat,)
        rows.append(layer_row(spec, in_shape, out_shape, params, macs))
    return rows


LAYER_COLUMNS = (
    "variant", "layer", "kind", "kernel", "stride", "padding",
    "input_shape", "output_shape", "params", "macs",
)  # fmt: skip


def layer_row(
    spec: LayerSpec, in_shape: tuple, out_shape: tuple, params: int, macs: int
) -> dict[str, Any]:
    """One row of a layer table (LAYER_COLUMNS, less the variant)."""
    pooling_or_conv = spec.kind in ("conv", "maxpool", "avgpool")
    return {
        "layer": spec.name,
        "kind": spec.kind,
        "kernel": spec.kernel or "",
        "stride": spec.stride if pooling_or_conv else "",
        "padding": spec.padding if spec.kind == "conv" else "",
        "input_shape": in_shape,
        "output_shape": out_shape,
        "params": int(params),
        "macs": int(macs),
    }


def check_buildable(
    variant: Variant, settings: dict[str, Any], input_shape: tuple[int, int, int], source: str
) -> None:
    """Raise StudyError naming the variant and the layer whose output would be empty."""
    from cnnstudy.config import StudyError

    for row in shape_rows(plan(variant, settings, 2), input_shape):
        if row["kind"] in ("conv", "maxpool", "avgpool") and min(row["output_shape"][:2]) < 1:
            h, w, _ = row["input_shape"]
            raise StudyError(
                f"{source}: variant {variant.name} cannot be built on input "
                f"{'x'.join(map(str, input_shape))}: layer {row['layer']} "
                f"({row['kind']} {row['kernel']}x{row['kernel']}, stride {row['stride']}"
                f"{', ' + row['padding'] if row['padding'] else ''}) gets a {h}x{w} map and "
                "would output nothing. Use fewer stages ([fixed] stage_widths), a smaller "
                "kernel_size, or drop 'valid' from [scientific] paddings."
            )


def check_row(row: dict[str, Any]) -> bool:
    """Does one layer-table row obey (W - F + 2P)/S + 1 and F*F*C_in*C_out + C_out?

    For `same`, P is what Keras pads: enough that the output is ceil(W/S).
    """
    kind, f, s = row["kind"], row.get("kernel") or 0, row.get("stride") or 1
    i, o = tuple(row["input_shape"]), tuple(row["output_shape"])
    if kind == "conv":
        if row["padding"] == "valid":
            sizes_ok = o[:2] == tuple(conv_output_size(w, int(f), 0, int(s)) for w in i[:2])
        else:
            sizes_ok = o[:2] == tuple(math.ceil(w / int(s)) for w in i[:2])
        return sizes_ok and row["params"] == conv_params(int(f), i[2], o[2])
    if kind in ("maxpool", "avgpool"):
        return (
            o[:2] == tuple(conv_output_size(w, int(f), 0, int(s)) for w in i[:2]) and o[2] == i[2]
        )
    if kind == "dense":
        return row["params"] == i[0] * o[0] + o[0]
    if kind == "flatten":
        return o[0] == math.prod(i)
    return True
