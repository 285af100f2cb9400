"""make bench's report: the whole-trial comparison across backends, from constructed rows."""

import keras
import numpy as np
import pandas as pd
import pytest

from cnnstudy.bench import backend_trials, render_markdown, short_table
from tests.helpers import ROOT


def _rows() -> pd.DataFrame:
    mine, other = keras.backend.backend(), "otherbackend"
    return pd.DataFrame(
        [
            {
                "section": "overhead",
                "backend": mine,
                "seconds": 4.4,
                "bare_seconds": 4.0,
                "overhead_ratio": 1.1,
                "note": "median of 5",
            },
            {
                "section": "trial",
                "backend": other,
                "study": "default",
                "variant": "same_maxpool",
                "seconds": 9.0,
                "note": "median of 3",
            },
            {
                "section": "trial",
                "backend": mine,
                "study": "default",
                "variant": "same_maxpool",
                "seconds": 6.0,
                "note": "median of 3",
            },
            {
                "section": "throughput",
                "backend": mine,
                "study": "default",
                "variant": "same_maxpool",
                "input_shape": "32x32x1",
                "batch_size": 64,
                "train_images_per_second": 3000.0,
                "infer_images_per_second": 9000.0,
            },
            {
                "section": "scaling",
                "backend": mine,
                "trials": 6,
                "seconds": 9.0,
                "seconds_per_trial": 1.5,
                "data_load_seconds": 1.0,
            },
            {
                "section": "scaling",
                "backend": mine,
                "trials": 18,
                "seconds": 36.0,
                "seconds_per_trial": 2.0,
                "data_load_seconds": 1.0,
            },
            {
                "section": "distributed",
                "backend": mine,
                "workers": 1,
                "seconds": 100.0,
                "note": "ok",
            },
        ]
    )


def test_whole_trial_ratios_are_over_this_runs_backend():
    trial = backend_trials(_rows())
    ratios = dict(zip(trial["backend"], trial["ratio"], strict=True))
    assert ratios == {keras.backend.backend(): 1.0, "otherbackend": 1.5}
    assert list(trial["backend"]) == [keras.backend.backend(), "otherbackend"]  # fastest first


def test_bench_markdown_and_summary_show_the_trial_comparison():
    df = _rows()
    md = render_markdown(df, "cpu-test")
    section = md.split("## Backends: one whole trial")[1].split("## Throughput")[0]
    assert "| otherbackend | 9.0 | 1.5 |" in section
    # the trial rows stay out of the throughput table
    throughput = md.split("## Throughput")[1].split("## Scaling")[0]
    assert "otherbackend" not in throughput
    assert "otherbackend 9.00 (1.50x)" in short_table(df)


# ---------------------------------------------------------------- make bench-gpu


def test_gpu_peaks_and_mfu_arithmetic():
    from cnnstudy import bench_gpu

    assert bench_gpu.peak_tflops("NVIDIA H100 80GB HBM3", "mixed_bfloat16") == 989.4
    assert bench_gpu.peak_tflops("NVIDIA H100 PCIe", "float32") == 378.0
    assert bench_gpu.peak_tflops("NVIDIA H200", "float32") == 494.7
    assert bench_gpu.peak_tflops("NVIDIA H100 NVL", "mixed_bfloat16") == 835.5
    assert bench_gpu.peak_tflops("NVIDIA L40S", "mixed_bfloat16") == 362.0  # not the L4's
    assert bench_gpu.peak_tflops("NVIDIA L4", "mixed_bfloat16") == 121.0
    for unknown in ("NVIDIA RTX A1000", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "cpu (x86_64)"):
        assert np.isnan(bench_gpu.peak_tflops(unknown, "float32")), unknown
    # 50,000 images/s of a 215 M-MAC model: 6 x 215e6 x 5e4 = 64.5 TFLOP/s of 989.4
    assert bench_gpu.mfu(5e4, 215e6, 989.4, train=True) == pytest.approx(0.06519, rel=1e-3)
    assert bench_gpu.mfu(5e4, 215e6, 989.4, train=False) == pytest.approx(0.06519 / 3, rel=1e-3)


def test_cifar10_models_macs_are_counted_from_its_layers():
    """same_maxpool of cifar10.toml: two 3x3 conv pairs (96, 192 maps), 32 px then 16 px."""
    from cnnstudy import bench_gpu
    from cnnstudy.core.study import load_study

    study = load_study(ROOT / "experiments/cifar10_standin.toml")
    same_maxpool = next(v for v in study.variants if v.name == "same_maxpool")
    convs = 32 * 32 * 9 * (3 * 96 + 96 * 96) + 16 * 16 * 9 * (96 * 192 + 192 * 192)
    macs = bench_gpu.macs_per_image(study, same_maxpool)
    assert convs < macs < convs * 1.01  # pools and the head add well under 1%


@pytest.fixture
def on_a_cpu(monkeypatch):
    """bench_gpu sees a CPU, also where the tests run on a GPU machine."""
    from cnnstudy import bench_gpu

    monkeypatch.setattr(bench_gpu, "device_description", lambda: "cpu (test, 2 cores)")
    monkeypatch.setattr(bench_gpu, "machine_name", lambda: "cpu-test")
    return bench_gpu


def test_gpu_bench_runs_every_section_and_renders_its_ratios(isolated_store, on_a_cpu):
    """The whole bench on a CPU, shrunk: one variant, 200 images of the smoke study."""
    bench_gpu = on_a_cpu

    df = bench_gpu.run(
        str(ROOT / "experiments/smoke.toml"), limit=200, variants=["same_maxpool"], repeats=1
    )
    assert list(df.columns[:8]) == [
        "backend", "study", "variant", "precision", "batch_size",
        "train_images_per_second", "mfu", "overhead_ratio",
    ]  # fmt: skip
    tp = df[df["section"] == "throughput"]
    assert sorted(tp["precision"]) == ["float32", "mixed_bfloat16"]
    assert (tp["train_images_per_second"] > 0).all() and (tp["infer_images_per_second"] > 0).all()
    ratio = tp["bare_train_images_per_second"] / tp["train_images_per_second"]
    np.testing.assert_allclose(tp["overhead_ratio"], ratio)
    assert tp["mfu"].isna().all()  # a CPU has no peak in the table: no MFU, not a guess
    hot = df[df["section"] == "hot path"].set_index("setting")
    assert {
        "NaN check every batch (now)",
        "NaN check every epoch (candidate)",
        "batch 128",
        "batch 256",
        "trial, compiled (before)",
        "input pipeline alone",
    } <= set(hot.index)
    assert (hot["seconds"].dropna() > 0).all()
    md = bench_gpu.render(df, "cpu-test")
    assert "per-epoch / per-batch NaN check, train images/s: **" in md
    assert "batch 256 / batch 64, train images/s: **" in md
    assert "| same_maxpool | float32 | 64" in md


def test_gpu_bench_refuses_without_a_gpu_and_adds_a_timed_sweep(
    isolated_store, monkeypatch, capsys, on_a_cpu
):
    bench_gpu = on_a_cpu

    monkeypatch.delenv("CNNSTUDY_BENCH_ANY_DEVICE", raising=False)
    assert bench_gpu.main([str(ROOT / "experiments/smoke.toml")]) == 2
    assert "no GPU is visible" in capsys.readouterr().err
    monkeypatch.setenv("CNNSTUDY_BENCH_ANY_DEVICE", "1")
    out = isolated_store / "bench"
    args = [str(ROOT / "experiments/smoke.toml"), "--sweep", "--set", "study.limit=200"]
    assert bench_gpu.main([*args, "--out", str(out)]) == 0
    csv = next(out.glob("*.csv"))
    sweep = pd.read_csv(csv).query("section == 'sweep'")
    assert len(sweep) == 1 and sweep["seconds"].iloc[0] > 0
    assert sweep["note"].iloc[0] == "18/18 trials finished"  # 6 x (2 tuning + 1), its store
    assert "--set study.limit=200" in csv.with_suffix(".md").read_text()
