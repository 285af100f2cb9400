"""Layer specs and the textbook shape arithmetic, without Keras.

A ``LayerSpec`` is one layer of a variant's plan (``core.variants.plan``); the Keras
builder (``nets.models``) turns each spec into a Keras layer. Every layer *kind* has one
entry in ``KINDS``: how it changes the shape, how many parameters and MACs it has. The
report and the tests check Keras's own shapes against this arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerSpec:
    name: str
    kind: str  # a key of KINDS
    units: int = 0  # filters (conv) or units (dense)
    kernel: int = 0
    stride: int = 1
    padding: str = "valid"
    activation: str | None = "relu"


# ---------------------------------------------------------------- the formulas


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


# ---------------------------------------------------------------- one entry per layer kind


@dataclass(frozen=True)
class Kind:
    """What a kind of layer does to the shape, and what it costs."""

    output: Callable[[LayerSpec, Shape], Shape]
    params: Callable[[LayerSpec, Shape], int]
    macs: Callable[[LayerSpec, Shape, Shape], int]
    spatial: bool  # it has a kernel and a stride over H x W


def _conv_out(spec: LayerSpec, i: Shape) -> Shape:
    h, w = (output_size(x, spec.kernel, spec.stride, spec.padding) for x in i[:2])
    return (h, w, spec.units)


def _pool_out(spec: LayerSpec, i: Shape) -> Shape:
    h, w = (output_size(x, spec.kernel, spec.stride, "valid") for x in i[:2])
    return (h, w, i[2])


def _none(*_: Any) -> int:
    return 0


def _window_ops(s: LayerSpec, i: Shape, o: Shape) -> int:
    """A pool or a depthwise filter: one multiply (or compare) per window element per
    output value, counted as a MAC so that downsampling layers are not free."""
    return max(o[0], 0) * max(o[1], 0) * o[2] * s.kernel * s.kernel


def _blur_out(spec: LayerSpec, i: Shape) -> Shape:
    h, w = (output_size(x, spec.kernel, spec.stride, "same") for x in i[:2])
    return (h, w, i[2])


KINDS: dict[str, Kind] = {
    "conv": Kind(
        _conv_out,
        lambda s, i: conv_params(s.kernel, i[2], s.units),
        lambda s, i, o: max(o[0], 0) * max(o[1], 0) * o[2] * s.kernel * s.kernel * i[2],
        spatial=True,
    ),
    "maxpool": Kind(_pool_out, _none, _window_ops, spatial=True),
    "avgpool": Kind(_pool_out, _none, _window_ops, spatial=True),
    # a fixed (untrained) depthwise low-pass filter: Zhang 2019's BlurPool, zero-padded
    "blur": Kind(_blur_out, lambda s, i: s.kernel * s.kernel * i[2], _window_ops, spatial=True),
    "gap": Kind(lambda s, i: (i[2],), _none, lambda s, i, o: i[0] * i[1] * i[2], spatial=False),
    "flatten": Kind(lambda s, i: (math.prod(i),), _none, _none, spatial=False),
    "dense": Kind(
        lambda s, i: (s.units,),
        lambda s, i: i[0] * s.units + s.units,
        lambda s, i, o: i[0] * o[0],
        spatial=False,
    ),
    "dropout": Kind(lambda s, i: i, _none, _none, spatial=False),
}


def layer_macs(spec: LayerSpec, in_shape: Shape, out_shape: Shape) -> int:
    """Multiply-accumulates of one layer per image: the one MAC formula of the package."""
    return int(KINDS[spec.kind].macs(spec, tuple(in_shape), tuple(out_shape)))


# ---------------------------------------------------------------- layer tables

LAYER_COLUMNS = (
    "variant", "layer", "kind", "kernel", "stride", "padding",
    "input_shape", "output_shape", "params", "macs",
)  # fmt: skip


def layer_row(spec: LayerSpec, in_shape: Shape, out_shape: Shape, params: int) -> dict[str, Any]:
    """One row of a layer table (LAYER_COLUMNS, less the variant); MACs from the shapes."""
    spatial = KINDS[spec.kind].spatial
    return {
        "layer": spec.name,
        "kind": spec.kind,
        "kernel": spec.kernel or "",
        "stride": spec.stride if spatial else "",
        "padding": spec.padding if spec.kind in ("conv", "blur") else "",
        "input_shape": tuple(in_shape),
        "output_shape": tuple(out_shape),
        "params": int(params),
        "macs": layer_macs(spec, in_shape, out_shape),
    }


def shape_rows(specs: list[LayerSpec], input_shape: Shape) -> list[dict[str, Any]]:
    """Each layer's input/output shape, params and MACs by the formulas alone."""
    shape: Shape = tuple(input_shape)
    rows = []
    for spec in specs:
        kind = KINDS[spec.kind]
        out = kind.output(spec, shape)
        rows.append(layer_row(spec, shape, out, kind.params(spec, shape)))
        shape = out
    return rows


def check_row(row: dict[str, Any]) -> bool:
    """Does one layer-table row obey (W - F + 2P)/S + 1 and F*F*C_in*C_out + C_out?

    For `same`, P is what Keras pads: enough that the output is ceil(W/S). The check is
    written out here rather than through KINDS, so that it is an independent witness.
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
    if kind == "blur":  # `same`, depthwise, no bias
        sizes_ok = o[:2] == tuple(math.ceil(w / int(s)) for w in i[:2])
        return sizes_ok and o[2] == i[2] and row["params"] == int(f) * int(f) * i[2]
    if kind == "dense":
        return row["params"] == i[0] * o[0] + o[0]
    if kind == "flatten":
        return o[0] == math.prod(i)
    if kind == "gap":
        return o == (i[2],) and row["params"] == 0
    return True
