"""The one registry of model variants.

A variant is a (padding, downsample) pair. The CLI, study-file validation, tests,
plots and colour order all read ``VARIANTS``; adding a variant is one line below
(plus a builder in ``models.DOWNSAMPLERS`` if its downsample kind is new).
"""

from __future__ import annotations

from dataclasses import dataclass

PADDINGS: tuple[str, ...] = ("same", "valid")
DOWNSAMPLES: tuple[str, ...] = ("maxpool", "avgpool", "stride")
STRIDE_MODES: tuple[str, ...] = ("last_conv", "extra_conv")


@dataclass(frozen=True)
class Variant:
    padding: str
    downsample: str

    @property
    def name(self) -> str:
        return f"{self.padding}_{self.downsample}"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("same", "maxpool"),
        Variant("same", "avgpool"),
        Variant("same", "stride"),
        Variant("valid", "maxpool"),
        Variant("valid", "avgpool"),
        Variant("valid", "stride"),
    )
}


def select(paddings: list[str], downsamplings: list[str]) -> list[Variant]:
    """Registered variants with the given paddings and downsamplings, in registry order."""
    return [v for v in VARIANTS.values() if v.padding in paddings and v.downsample in downsamplings]


def colour_order() -> list[str]:
    """Variant names in the fixed order that plots use for colours."""
    return list(VARIANTS)
