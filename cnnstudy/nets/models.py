"""Keras 3 models from a variant's layer plan. Knows nothing of tuners or MLflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from cnnstudy.core.layers import LayerSpec
from cnnstudy.core.variants import Variant, plan

# One Keras factory per layer kind (core.layers.KINDS holds the same kinds' arithmetic).
LayerFactory = Callable[[LayerSpec, dict[str, Any]], keras.layers.Layer]
LAYERS: dict[str, LayerFactory] = {
    "conv": lambda s, _: keras.layers.Conv2D(
        s.units, s.kernel, strides=s.stride, padding=s.padding, activation=s.activation, name=s.name
    ),
    "maxpool": lambda s, _: keras.layers.MaxPooling2D(s.kernel, strides=s.stride, name=s.name),
    "avgpool": lambda s, _: keras.layers.AveragePooling2D(s.kernel, strides=s.stride, name=s.name),
    "flatten": lambda s, _: keras.layers.Flatten(name=s.name),
    "dense": lambda s, _: keras.layers.Dense(s.units, activation=s.activation, name=s.name),
    "dropout": lambda s, settings: keras.layers.Dropout(settings["dropout"], name=s.name),
}


def build_model(
    variant: Variant,
    settings: dict[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
) -> keras.Sequential:
    """An uncompiled model for one variant under the study's fixed + nuisance settings."""
    layers = [LAYERS[spec.kind](spec, settings) for spec in plan(variant, settings, n_classes)]
    return keras.Sequential([keras.Input(input_shape), *layers], name=variant.name)


OPTIMIZERS: dict[str, Callable[[float, float | None], keras.optimizers.Optimizer]] = {
    "adam": lambda lr, wd: keras.optimizers.Adam(lr, weight_decay=wd),
    "adamw": lambda lr, wd: keras.optimizers.AdamW(lr, weight_decay=wd or 0.004),
    "sgd": lambda lr, wd: keras.optimizers.SGD(lr, momentum=0.9, weight_decay=wd),
}


def make_optimizer(settings: dict[str, Any]) -> keras.optimizers.Optimizer:
    wd = settings.get("weight_decay", 0.0) or None
    return OPTIMIZERS[settings["optimizer"]](settings["learning_rate"], wd)


def compile_model(model: keras.Model, settings: dict[str, Any]) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(settings),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
