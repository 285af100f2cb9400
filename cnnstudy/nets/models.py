"""Keras 3 models from a variant's layer plan. Knows nothing of tuners or MLflow."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from cnnstudy.core.layers import LayerSpec
from cnnstudy.core.variants import Variant, plan

# One Keras factory per layer kind (core.layers.KINDS holds the same kinds' arithmetic).
LayerFactory = Callable[[LayerSpec, dict[str, Any]], keras.layers.Layer]
LAYERS: dict[str, LayerFactory] = {
    "conv": lambda s, settings: keras.layers.Conv2D(
        s.units,
        s.kernel,
        strides=s.stride,
        padding=s.padding,
        activation=s.activation,
        kernel_initializer=initializer(s, settings),
        name=s.name,
    ),
    "maxpool": lambda s, _: keras.layers.MaxPooling2D(s.kernel, strides=s.stride, name=s.name),
    "avgpool": lambda s, _: keras.layers.AveragePooling2D(s.kernel, strides=s.stride, name=s.name),
    "blur": lambda s, _: blur_layer(s),
    "gap": lambda s, _: keras.layers.GlobalAveragePooling2D(name=s.name),
    "flatten": lambda s, _: keras.layers.Flatten(name=s.name),
    "dense": lambda s, settings: keras.layers.Dense(
        s.units, activation=s.activation, kernel_initializer=initializer(s, settings), name=s.name
    ),
    "dropout": lambda s, settings: keras.layers.Dropout(settings["dropout"], name=s.name),
}


def initializer(spec: LayerSpec, settings: dict[str, Any]) -> str:
    """The study's `init` for a ReLU layer; Keras' glorot_uniform for the softmax output."""
    return settings.get("init", "glorot_uniform") if spec.activation == "relu" else "glorot_uniform"


def binomial_kernel(size: int) -> np.ndarray:
    """The size x size binomial low-pass filter (outer product of Pascal's row), sum 1."""
    row = np.array([float(math.comb(size - 1, k)) for k in range(size)])
    kernel = np.outer(row, row)
    return kernel / kernel.sum()


def blur_layer(spec: LayerSpec) -> keras.layers.Layer:
    """Zhang 2019's BlurPool filter: the same fixed binomial blur on every channel, strided.
    Its weights are set at build time and never trained."""
    kernel = binomial_kernel(spec.kernel)

    def init(shape, dtype=None):  # noqa: ANN001, ANN202 - (k, k, channels, 1)
        return keras.ops.cast(np.broadcast_to(kernel[:, :, None, None], shape), dtype)

    return keras.layers.DepthwiseConv2D(
        spec.kernel,
        strides=spec.stride,
        padding=spec.padding,
        use_bias=False,
        depthwise_initializer=init,
        trainable=False,
        name=spec.name,
    )


def build_model(
    variant: Variant,
    settings: dict[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
) -> keras.Sequential:
    """An uncompiled model for one variant under the study's fixed + nuisance settings.

    Under ``precision = "mixed_bfloat16"`` every layer computes in bfloat16 and keeps float32
    weights, except the softmax output, which stays float32 so the loss is computed in full
    precision (the Keras mixed-precision recipe; bfloat16 needs no loss scaling)."""
    specs = plan(variant, settings, n_classes)
    policy = settings.get("precision", "float32")
    layers = []
    for spec in specs:
        layer = LAYERS[spec.kind](spec, settings)
        layer.dtype_policy = "float32" if spec.activation == "softmax" else policy
        layers.append(layer)
    return keras.Sequential([keras.Input(input_shape), *layers], name=variant.name)


OPTIMIZERS: dict[str, Callable[[float, float | None], keras.optimizers.Optimizer]] = {
    "adam": lambda lr, wd: keras.optimizers.Adam(lr, weight_decay=wd),
    "adamw": lambda lr, wd: keras.optimizers.AdamW(lr, weight_decay=wd or 0.004),
    "sgd": lambda lr, wd: keras.optimizers.SGD(lr, momentum=0.9, weight_decay=wd),
}


def learning_rate(settings: dict[str, Any], steps_per_epoch: int) -> Any:
    """The study's learning rate: constant, or cosine decay to 0 over the run, after a linear
    warm-up from 0 over ``warmup_epochs`` (if any)."""
    lr = settings["learning_rate"]
    cosine = settings.get("schedule", "constant") == "cosine"
    total = max(1, steps_per_epoch * settings["epochs"])
    warm = min(total - 1, steps_per_epoch * settings.get("warmup_epochs", 0))
    if warm > 0:  # alpha = 1 holds a constant schedule at lr once warmed up
        return keras.optimizers.schedules.CosineDecay(
            0.0, total - warm, alpha=0.0 if cosine else 1.0, warmup_target=lr, warmup_steps=warm
        )
    if cosine:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    return lr


def make_optimizer(
    settings: dict[str, Any], steps_per_epoch: int = 1
) -> keras.optimizers.Optimizer:
    wd = settings.get("weight_decay", 0.0) or None
    return OPTIMIZERS[settings["optimizer"]](learning_rate(settings, steps_per_epoch), wd)


def compile_model(
    model: keras.Model, settings: dict[str, Any], steps_per_epoch: int = 1
) -> keras.Model:
    """Compile for training; ``steps_per_epoch`` sizes a cosine schedule (if the study has one)."""
    model.compile(
        optimizer=make_optimizer(settings, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
