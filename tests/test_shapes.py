"""Every registered variant builds, and Keras's shapes and params match the textbook formulas."""

import math

import pytest

from cnnstudy.core.layers import conv_output_size, conv_params, output_size, shape_rows
from cnnstudy.core.study import load_defaults
from cnnstudy.core.variants import PADDINGS, downsamples, plan, variants
from cnnstudy.nets.shapes import formula_table, mismatches, variant_table

BASE = {**load_defaults()["fixed"], "stride_mode": "last_conv", "learning_rate": 1e-3}
SETTINGS = {
    "default": BASE,
    "all_cnn": {**BASE, "stride_mode": "extra_conv"},
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


def test_extra_conv_mode_adds_one_strided_conv_per_stage():
    rows = shape_rows(plan(variants()["valid_stride"], SETTINGS["all_cnn"], 10), (32, 32, 3))
    downs = [r for r in rows if r["layer"].endswith("_down")]
    assert len(downs) == 2 and all(r["stride"] == 2 for r in downs)


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
