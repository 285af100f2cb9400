"""make bench's report: the whole-trial comparison across backends, from constructed rows."""

import keras
import pandas as pd

from cnnstudy.bench import backend_trials, render_markdown, short_table


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
