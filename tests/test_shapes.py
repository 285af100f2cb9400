"""Every registered variant builds, and Keras's shapes and params match the textbook formulas."""

import math

import pytest

from cnnstudy.core.layers import conv_output_size, conv_params, output_size, shape_rows
from cnnstudy.core.study import load_defaults
from cnnstudy.core.variants import PADDINGS, downsamples, plan, variants
from cnnstudy.nets.shapes import formula_table, mismatches, variant_table

BASE = {**load_defaults()["fixed"], "head": "flatten", "learning_rate": 1e-3}
SETTINGS = {
    "default": BASE,
    "gap": {**BASE, "head": "gap"},
    "deep": {
        **BASE,
        "conv_per_stage": 2,
        "stage_widths": [8, 16],
        "dense_units": [32, 16],
        "dropout": 0.2,
    },
    "k5": {**BASE, "kernel_size": 5, "stage_widths": [8, 16]},
}
INPUTS = {"mnist": (28, 28, 1), "odd": (29, 31, 3), "cifar": (32, 32, 3)}


def test_registry_is_the_full_factorial():
    assert {(v.padding, v.downsample) for v in variants().values()} == {
        (p, d) for p in PADDINGS for d in downsamples()
    }
    assert all(name == f"{v.padding}_{v.downsample}" for name, v in variants().items())


@pytest.mark.parametrize("name", list(variants()))
@pytest.mark.parametrize("settings_name", list(SETTINGS))
@pytest.mark.parametrize("input_name", list(INPUTS))
def test_keras_shapes_match_formulas(name, settings_name, input_name):
    variant, settings, shape = variants()[name], SETTINGS[settings_name], INPUTS[input_name]
    keras_rows = variant_table(variant, settings, shape, 10)
    assert mismatches(keras_rows, formula_table(variant, settings, shape, 10)) == []
    for row in keras_rows:
        if row["kind"] == "conv":
            h_in, w_in, c_in = row["input_shape"]
            f, s, c_out = row["kernel"], row["stride"], row["output_shape"][2]
            if row["padding"] == "valid":
                assert row["output_shape"][:2] == (
                    conv_output_size(h_in, f, 0, s),
                    conv_output_size(w_in, f, 0, s),
                )
            else:  # Keras's `same`: ceil(W/S) whatever F
                assert row["output_shape"][:2] == (math.ceil(h_in / s), math.ceil(w_in / s))
            assert row["params"] == f * f * c_in * c_out + c_out
            h, w, _ = row["output_shape"]
            assert row["macs"] == h * w * c_out * f * f * c_in
        if row["kind"] == "dense":
            assert (
                row["params"]
                == row["input_shape"][0] * row["output_shape"][0] + row["output_shape"][0]
            )


def test_textbook_formula_examples():
    # CS231n: 7x7 input, 3x3 filter, stride 1 pad 0 -> 5; stride 2 -> 3; AlexNet conv1 -> 55.
    assert conv_output_size(7, 3, 0, 1) == 5
    assert conv_output_size(7, 3, 0, 2) == 3
    assert conv_output_size(227, 11, 0, 4) == 55
    # `same` with stride 1 and pad (F-1)/2 keeps the size, as the formula says.
    assert conv_output_size(28, 5, 2, 1) == 28 == output_size(28, 5, 1, "same")
    assert output_size(29, 3, 2, "same") == 15
    assert conv_params(3, 3, 64) == 1792  # VGG conv1_1


def test_stride_variant_replaces_pool_and_shrinks_like_it():
    same = {
        r["layer"]: r for r in shape_rows(plan(variants()["same_maxpool"], BASE, 10), (28, 28, 1))
    }
    stride = shape_rows(plan(variants()["same_stride"], BASE, 10), (28, 28, 1))
    assert not any(r["kind"] in ("maxpool", "avgpool") for r in stride)
    assert stride[-1]["output_shape"] == same["logits"]["output_shape"]
    flat = [r for r in stride if r["kind"] == "flatten"][0]
    assert flat["output_shape"] == same["flatten"]["output_shape"] == (7 * 7 * 32,)
    # stride does the same spatial reduction with a quarter of the conv MACs of stage 1
    assert stride[0]["macs"] * 4 == same["s1_conv1"]["macs"]


def test_allconv_adds_one_strided_conv_per_stage():
    rows = shape_rows(plan(variants()["valid_allconv"], BASE, 10), (32, 32, 3))
    downs = [r for r in rows if r["layer"].endswith("_down")]
    assert len(downs) == 2 and all(r["stride"] == 2 and r["kernel"] == 3 for r in downs)
    assert not any(r["kind"] in ("maxpool", "avgpool") for r in rows)


def test_convpool_is_maxpool_plus_one_stride_1_conv_per_stage():
    pooled = shape_rows(plan(variants()["same_maxpool"], BASE, 10), (28, 28, 1))
    rows = shape_rows(plan(variants()["same_convpool"], BASE, 10), (28, 28, 1))
    extra = [r for r in rows if r["layer"].endswith("_extra")]
    assert len(extra) == 2 and all(r["stride"] == 1 for r in extra)
    assert [r["output_shape"] for r in rows if r["kind"] == "maxpool"] == [
        r["output_shape"] for r in pooled if r["kind"] == "maxpool"
    ]


@pytest.mark.parametrize("size", [7, 8, 27, 28, 29])
def test_blurpool_halves_the_map_as_maxpool_does(size):
    """max pool at stride 1 (W-1), then the blur at stride 2 (ceil): floor(W/2), as max pool."""
    for padding in PADDINGS:
        blur = shape_rows(plan(variants()[f"{padding}_blurpool"], BASE, 10), (size, size, 1))
        pool = shape_rows(plan(variants()[f"{padding}_maxpool"], BASE, 10), (size, size, 1))
        assert [r["output_shape"] for r in blur if r["kind"] == "blur"] == [
            r["output_shape"] for r in pool if r["kind"] == "maxpool"
        ]


@pytest.mark.parametrize("level", list(downsamples()))
def test_gap_head_is_the_same_size_for_both_paddings(level):
    heads = {}
    for padding in PADDINGS:
        rows = shape_rows(plan(variants()[f"{padding}_{level}"], SETTINGS["gap"], 10), (28, 28, 1))
        heads[padding] = [(r["layer"], r["params"]) for r in rows if r["kind"] == "dense"]
    assert heads["same"] == heads["valid"]
    flat = {
        p: sum(
            r["params"]
            for r in shape_rows(plan(variants()[f"{p}_maxpool"], BASE, 10), (28, 28, 1))
            if r["kind"] == "dense"
        )
        for p in PADDINGS
    }
    assert flat["same"] > flat["valid"]  # the flatten head is what `valid` shrinks


def test_pools_and_blur_count_their_macs():
    rows = {
        r["layer"]: r for r in shape_rows(plan(variants()["same_blurpool"], BASE, 10), (28, 28, 1))
    }
    assert rows["s1_maxpool"]["macs"] == 27 * 27 * 16 * 2 * 2
    assert rows["s1_blur"]["macs"] == 14 * 14 * 16 * 3 * 3
    assert rows["s1_blur"]["params"] == 3 * 3 * 16


def test_blur_is_fixed_sums_to_one_and_does_not_train():
    import keras
    import numpy as np

    from cnnstudy.nets.models import build_model, compile_model

    model = compile_model(
        build_model(variants()["same_blurpool"], SETTINGS["gap"], (12, 12, 1), 3), SETTINGS["gap"]
    )
    blur = model.get_layer("s1_blur")
    before = blur.get_weights()[0].copy()
    assert np.allclose(before.sum(axis=(0, 1)), 1.0)
    assert np.allclose(before[:, :, 0, 0], np.outer([1, 2, 1], [1, 2, 1]) / 16)
    assert blur.trainable_weights == []
    x = np.random.default_rng(0).random((64, 12, 12, 1), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    conv_before = model.get_layer("s1_conv1").get_weights()[0].copy()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.array_equal(blur.get_weights()[0], before)
    assert not np.array_equal(model.get_layer("s1_conv1").get_weights()[0], conv_before)


def test_a_new_level_is_one_registry_entry(monkeypatch):
    """Register a level (ConvPool: an extra stride-1 conv, then the max pool) with its builder
    alone: the plan, Keras model, shape table and validation all take it, unchanged."""
    from cnnstudy.core import variants as registry
    from cnnstudy.core.layers import LayerSpec
    from cnnstudy.core.study import build_study

    monkeypatch.setattr(registry, "LEVELS", dict(registry.LEVELS))

    @registry.register_level("convpool_test", "extra 3x3 conv, then 2x2 max pool")
    def _convpool(stage):
        pool = LayerSpec(f"s{stage.index}_pool", "maxpool", 0, 2, 2, activation=None)
        return [*stage.convs_then(), stage.conv(0, name=f"s{stage.index}_extra"), pool]

    assert "convpool_test" in registry.downsamples()
    variant = registry.variants()["valid_convpool_test"]
    keras_rows = variant_table(variant, BASE, (28, 28, 1), 10)
    assert not mismatches(keras_rows, formula_table(variant, BASE, (28, 28, 1), 10))
    kinds = [r["kind"] for r in keras_rows]
    assert kinds[:3] == ["conv", "conv", "maxpool"]
    assert keras_rows[2]["output_shape"] == (12, 12, 16)  # 28 -> 26 -> 24 -> pool 12
    study = build_study({"scientific": {"downsamplings": ["maxpool", "convpool_test"]}}, "t.toml")
    assert [v.name for v in study.variants] == [
        "same_maxpool",
        "same_convpool_test",
        "valid_maxpool",
        "valid_convpool_test",
    ]


@pytest.mark.parametrize("init", ["he_normal", "glorot_uniform"])
def test_relu_layers_take_the_study_init_and_the_softmax_keeps_glorot(init):
    """He normal: sd sqrt(2/fan_in) (Keras widens the truncated normal to keep it); glorot
    uniform: U(+-sqrt(6/(in+out))), sd that bound / sqrt(3)."""
    import keras
    import numpy as np

    from cnnstudy.nets.models import build_model

    settings = {**SETTINGS["gap"], "stage_widths": [32, 64], "dense_units": [256], "init": init}
    keras.utils.set_random_seed(0)
    model = build_model(variants()["same_maxpool"], settings, (16, 16, 8), 10)

    def expected_sd(fan_in: int, fan_out: int, kind: str) -> float:
        if kind == "he_normal":
            return math.sqrt(2 / fan_in)
        return math.sqrt(6 / (fan_in + fan_out)) / math.sqrt(3)

    for name, fan_in, fan_out, kind in [
        ("s2_conv1", 9 * 32, 9 * 64, init),  # conv: fans count the 3x3 window
        ("fc1", 64, 256, init),
        ("logits", 256, 10, "glorot_uniform"),
    ]:
        w = model.get_layer(name).get_weights()[0]
        assert np.std(w) == pytest.approx(expected_sd(fan_in, fan_out, kind), rel=0.1), name


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_warmup_rises_linearly_then_follows_the_schedule(schedule):
    """10 steps an epoch, 4 epochs, 1 warm-up epoch: 0 -> lr over steps 0..10, then constant
    at lr, or half a cosine down to 0 over the remaining 30 steps."""
    import keras

    from cnnstudy.nets.models import learning_rate

    base = {"learning_rate": 0.01, "epochs": 4, "schedule": schedule}
    lr = learning_rate({**base, "warmup_epochs": 1}, steps_per_epoch=10)
    at = {step: float(keras.ops.convert_to_numpy(lr(step))) for step in (0, 5, 10, 25, 40)}
    assert at[0] == pytest.approx(0.0, abs=1e-9)
    assert at[5] == pytest.approx(0.005)
    assert at[10] == pytest.approx(0.01)
    if schedule == "cosine":
        assert at[25] == pytest.approx(0.005, rel=1e-4)  # halfway through the decay
        assert at[40] == pytest.approx(0.0, abs=1e-9)
    else:
        assert at[25] == pytest.approx(0.01) and at[40] == pytest.approx(0.01)
    no_warmup = learning_rate({**base, "warmup_epochs": 0}, steps_per_epoch=10)
    if schedule == "constant":
        assert no_warmup == 0.01
    else:
        assert float(keras.ops.convert_to_numpy(no_warmup(0))) == pytest.approx(0.01)


def test_mixed_bfloat16_computes_in_bf16_keeps_f32_weights_and_a_f32_softmax():
    """`precision = "mixed_bfloat16"` reaches the model: every layer but the output computes
    in bfloat16 on float32 weights; a training step stays finite; float32 is untouched."""
    import keras
    import numpy as np

    from cnnstudy.nets.models import build_model, compile_model

    settings = {**SETTINGS["gap"], "precision": "mixed_bfloat16"}
    keras.utils.set_random_seed(0)
    model = build_model(variants()["same_avgpool"], settings, (16, 16, 3), 10)
    conv, logits = model.get_layer("s1_conv1"), model.get_layer("logits")
    assert (conv.compute_dtype, conv.variable_dtype) == ("bfloat16", "float32")
    assert (logits.compute_dtype, logits.variable_dtype) == ("float32", "float32")
    x = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
    assert keras.ops.convert_to_numpy(model(x)).dtype == np.float32
    compile_model(model, settings)
    history = model.fit(x, np.arange(8) % 10, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    plain = build_model(variants()["same_avgpool"], SETTINGS["gap"], (16, 16, 3), 10)
    assert {layer.compute_dtype for layer in plain.layers} == {"float32"}
