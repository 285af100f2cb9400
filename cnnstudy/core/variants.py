"""The one registry of model variants, and the layer plan each one is built from.

A variant is a (padding, downsampling level) pair, named ``<padding>_<level>``. Each
level in ``LEVELS`` carries its own stage builder: the layers one stage of the network
gets (its convs and its way of halving the map). The plan, the Keras builder, the shape
table, validation, analysis and plots read this registry and never branch on a level's
name, so a new level is one ``register_level`` call with its builder, and nothing else.
The CLI, the tests and the plot colours follow registry order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnnstudy.core.layers import LayerSpec, shape_rows

PADDINGS: tuple[str, ...] = ("same", "valid")
POOL_SIZE = 2


@dataclass(frozen=True)
class Stage:
    """What a level's builder is given: one stage of ``[[CONV-RELU]*N -> DOWNSAMPLE]``."""

    index: int  # 1-based
    width: int  # filters of the stage's convs
    convs: int  # N
    kernel: int
    padding: str
    settings: dict[str, Any]

    def conv(
        self, c: int, stride: int = 1, name: str | None = None, kernel: int | None = None
    ) -> LayerSpec:
        name = name or f"s{self.index}_conv{c}"
        return LayerSpec(name, "conv", self.width, kernel or self.kernel, stride, self.padding)

    def convs_then(self, *, last_stride: int = 1) -> list[LayerSpec]:
        """The stage's N convs, the last one with ``last_stride``."""
        return [
            self.conv(c, last_stride if c == self.convs else 1) for c in range(1, self.convs + 1)
        ]


StageBuilder = Callable[[Stage], list[LayerSpec]]


@dataclass(frozen=True)
class Level:
    """A downsampling level: its name, what it is, and the layers it gives a stage."""

    name: str
    summary: str
    build_stage: StageBuilder


LEVELS: dict[str, Level] = {}


def register_level(name: str, summary: str) -> Callable[[StageBuilder], StageBuilder]:
    """Decorator: register ``builder`` as the stage builder of downsampling level ``name``."""

    def wrap(builder: StageBuilder) -> StageBuilder:
        LEVELS[name] = Level(name, summary, builder)
        return builder

    return wrap


# ---------------------------------------------------------------- the levels
# Springenberg et al. 2014 (All-CNN) name three of them: the base model with max pooling,
# "Strided-CNN" (stride), "All-CNN" (allconv) and "ConvPool-CNN" (convpool); Zhang 2019
# adds anti-aliased max pooling (blurpool).


def _pool(stage: Stage, kind: str, stride: int = POOL_SIZE) -> LayerSpec:
    name = f"s{stage.index}_{kind}"
    return LayerSpec(name, kind, 0, POOL_SIZE, stride, activation=None)


@register_level("maxpool", "2x2 max pool, stride 2, after the convs")
def _maxpool(stage: Stage) -> list[LayerSpec]:
    return [*stage.convs_then(), _pool(stage, "maxpool")]


@register_level("avgpool", "2x2 average pool, stride 2, after the convs")
def _avgpool(stage: Stage) -> list[LayerSpec]:
    return [*stage.convs_then(), _pool(stage, "avgpool")]


@register_level("stride", "no pool: the stage's last conv gets stride 2 (Strided-CNN)")
def _stride(stage: Stage) -> list[LayerSpec]:
    return stage.convs_then(last_stride=2)


@register_level("allconv", "an extra 3x3 stride-2 conv in place of the pool (All-CNN)")
def _allconv(stage: Stage) -> list[LayerSpec]:
    return [*stage.convs_then(), stage.conv(0, 2, name=f"s{stage.index}_down", kernel=3)]


@register_level("convpool", "an extra 3x3 stride-1 conv, then the max pool (ConvPool-CNN)")
def _convpool(stage: Stage) -> list[LayerSpec]:
    extra = stage.conv(0, 1, name=f"s{stage.index}_extra", kernel=3)
    return [*stage.convs_then(), extra, _pool(stage, "maxpool")]


@register_level("blurpool", "2x2 max pool at stride 1, then a fixed 3x3 binomial blur, stride 2")
def _blurpool(stage: Stage) -> list[LayerSpec]:
    blur = LayerSpec(f"s{stage.index}_blur", "blur", 0, 3, 2, "same", activation=None)
    return [*stage.convs_then(), _pool(stage, "maxpool", stride=1), blur]


# ---------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    padding: str
    downsample: str

    @property
    def name(self) -> str:
        return f"{self.padding}_{self.downsample}"

    @property
    def level(self) -> Level:
        return LEVELS[self.downsample]


def downsamples() -> tuple[str, ...]:
    """The registered downsampling levels, in registry order."""
    return tuple(LEVELS)


def variants() -> dict[str, Variant]:
    """Every (padding, level) pair, levels in registry order within each padding."""
    pairs = (Variant(p, d) for p in PADDINGS for d in LEVELS)
    return {v.name: v for v in pairs}


def select(paddings: list[str], downsamplings: list[str]) -> list[Variant]:
    """Registered variants with the given paddings and downsamplings, in registry order."""
    return [
        v for v in variants().values() if v.padding in paddings and v.downsample in downsamplings
    ]


def colour_order() -> list[str]:
    """Variant names in the fixed order that plots use for colours."""
    return list(variants())


# ---------------------------------------------------------------- the plan


def plan(variant: Variant, settings: dict[str, Any], n_classes: int) -> list[LayerSpec]:
    """INPUT -> [[CONV-RELU]*N -> DOWNSAMPLE]*M -> [FC-RELU]*K -> FC-softmax."""
    layers: list[LayerSpec] = []
    for s, width in enumerate(settings["stage_widths"], start=1):
        stage = Stage(
            s, width, settings["conv_per_stage"], settings["kernel_size"], variant.padding, settings
        )
        layers += variant.level.build_stage(stage)
    # gap: the head has the same size whatever the padding; flatten: the textbook FC head
    head = settings.get("head", "flatten")
    layers.append(LayerSpec(head, head, activation=None))
    for i, units in enumerate(settings["dense_units"], start=1):
        layers.append(LayerSpec(f"fc{i}", "dense", units))
        if settings.get("dropout", 0) > 0:
            layers.append(LayerSpec(f"fc{i}_dropout", "dropout", activation=None))
    layers.append(LayerSpec("logits", "dense", n_classes, activation="softmax"))
    return layers


def unbuildable(
    variant: Variant, settings: dict[str, Any], input_shape: tuple[int, int, int]
) -> str | None:
    """Why the variant cannot be built on this input (the first empty layer), or None."""
    for row in shape_rows(plan(variant, settings, 2), input_shape):
        if row["kernel"] and min(row["output_shape"][:2]) < 1:
            h, w, _ = row["input_shape"]
            return (
                f"variant {variant.name} cannot be built on input "
                f"{'x'.join(map(str, input_shape))}: layer {row['layer']} "
                f"({row['kind']} {row['kernel']}x{row['kernel']}, stride {row['stride']}"
                f"{', ' + row['padding'] if row['padding'] else ''}) gets a {h}x{w} map and "
                "would output nothing"
            )
    return None
