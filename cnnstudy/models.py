"""Keras 3 models from a variant's layer plan. Knows nothing of tuners or MLflow."""

from __future__ import annotations

from typing import Any

import keras

from cnnstudy.architecture import LayerSpec, plan
from cnnstudy.variants import Variant


def _layer(spec: LayerSpec, settings: dict[str, Any]) -> keras.layers.Layer:
    if spec.kind == "conv":
        return keras.layers.Conv2D(
            spec.units,
            spec.kernel,
            strides=spec.stride,
            padding=spec.padding,
            activation=spec.activation,
            name=spec.name,
        )
    if spec.kind == "maxpool":
        return keras.layers.MaxPooling2D(spec.kernel, strides=spec.stride, name=spec.name)
    if spec.kind == "avgpool":
        return keras.layers.AveragePooling2D(spec.kernel, strides=spec.stride, name=spec.name)
    if spec.kind == "flatten":
        return keras.layers.Flatten(name=spec.name)
    if spec.kind == "dense":
        return keras.layers.Dense(spec.units, activation=spec.activation, name=spec.name)
    if spec.kind == "dropout":
        return keras.layers.Dropout(settings["dropout"], name=spec.name)
    raise ValueError(f"no Keras layer for kind {spec.kind!r}")


def build_model(
    variant: Variant,
    settings: dict[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
) -> keras.Sequential:
    """An uncompiled model for one variant under the study's fixed + nuisance settings."""
    layers = [_layer(spec, settings) for spec in plan(variant, settings, n_classes)]
    return keras.Sequential([keras.Input(input_shape), *layers], name=variant.name)


def make_optimizer(settings: dict[str, Any]) -> keras.optimizers.Optimizer:
    lr, wd = settings["learning_rate"], settings.get("weight_decay", 0.0) or None
    name = settings["optimizer"]
    if name == "adam":
        return keras.optimizers.Adam(lr, weight_decay=wd)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=wd or 0.004)
    return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=wd)


def compile_model(model: keras.Model, settings: dict[str, Any]) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(settings),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
