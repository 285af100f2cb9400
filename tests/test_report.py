"""A report built from the tiny sweep: every section, and numbers that match MLflow."""

import os

import mlflow
import pandas as pd
import pytest

from cnnstudy.cli import main
from tests.test_report_render import assert_well_nested

SECTIONS = (
    "Primary analysis (stated before the results)",
    "Headline",
    "Verdict per design factor",
    "Two-way ANOVA",
    "Sensitivity: paired t-tests",
    "Budget robustness",
    "Tuning",
    "Timing (interleaved pass)",
    "Claims scorecard",
    "Figures",
    "Per-variant summary",
    "Shape arithmetic",
    "Published reference points",
    "Caveats and reproduction",
)


@pytest.fixture(scope="module")
def report(tiny_sweep):
    tmp, runs, _ = tiny_sweep
    cwd = os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.chdir(tmp)
    try:
        assert main(["report", "experiments/smoke.toml"]) == 0
    finally:
        os.chdir(cwd)
    return tmp / "results" / "smoke", runs


def test_report_files_exist(report):
    out, _ = report
    for name in (
        "report.html",
        "report.md",
        "summary.csv",
        "verdicts.csv",
        "claims.csv",
        "runs.csv",
        "tuning.csv",
        "budgets.csv",
        "timing.csv",
        "sensitivity.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "figures").glob("*.png"))) == 7


def test_report_has_every_section_in_both_formats(report):
    out, _ = report
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"## {section}" in md, section
        assert section in page
    assert page.count("data:image/png;base64,") == 7  # self-contained
    assert "figures/mean_ci.png" in md
    assert "MISMATCH" not in md and "| ok |" in md  # the shape table checks out


def test_report_html_is_well_nested_and_keeps_code_literal(report):
    out, _ = report
    page = (out / "report.html").read_text()
    assert_well_nested(page)
    assert "<code>F*F*C_in*C_out + C_out</code>" in page
    assert '<p class="headline"><strong>Best variant: <code>' in page  # the e2e test's hook
    assert '<table class="t">' in page and "<th>p (Holm)</th>" in page
    assert "Open the replicate runs in MLflow</a>" in page
    assert "[Open the replicate runs in MLflow](<http" in (out / "report.md").read_text()


def test_summary_numbers_match_mlflow(report):
    out, runs = report
    summary = pd.read_csv(out / "summary.csv").set_index("variant")
    rep = runs[runs["tags.cnnstudy.stage"] == "replicate"]
    for variant, group in rep.groupby("params.variant"):
        assert summary.loc[variant, "n"] == len(group)
        assert summary.loc[variant, "mean_test_accuracy"] == pytest.approx(
            group["metrics.test_accuracy"].mean(), rel=1e-5
        )
        assert summary.loc[variant, "shift_consistency_mean"] == pytest.approx(
            group["metrics.shift_consistency"].mean(), rel=1e-5
        )


def test_verdicts_and_claims_have_the_promised_columns(report):
    out, _ = report
    v = pd.read_csv(out / "verdicts.csv")
    assert list(v.columns)[:15] == [
        "factor", "a", "b", "n_seeds", "mean_diff", "ci_low", "ci_high", "p_adjusted",
        "margin", "equiv_ci_low", "equiv_ci_high", "p_equivalence", "mde", "seeds_needed",
        "verdict",
    ]  # fmt: skip
    allowed = {"equivalent", "inconclusive"} | {f"{x} wins" for x in set(v["a"]) | set(v["b"])}
    assert set(v["verdict"]) <= allowed
    s = pd.read_csv(out / "summary.csv")
    assert s["p_best"].sum() == pytest.approx(1.0)
    assert set(v["factor"]) == {"padding", "downsampling"}
    c = pd.read_csv(out / "claims.csv")
    assert {"claim", "metric", "evidence", "verdict"} <= set(c.columns)
    assert set(c["verdict"]) <= {"supported", "refuted", "inconclusive", "not tested in this study"}
    # the tiny study has maxpool and stride but no blurpool or allconv
    tested = c.set_index("claim")["verdict"] != "not tested in this study"
    assert tested["pooling gives invariance to small translations"]
    # gap head: the border probe ran (its verdict may still be "not tested" if the tiny
    # networks fail its reference check, but not for want of the probe)
    border = c.set_index("claim").loc["same padding keeps border information"]
    assert tested["same padding keeps border information"] or "probe not valid" in border.evidence
    assert not tested["blur pooling restores shift consistency (Zhang 2019)"]


def test_report_is_logged_to_the_parent_run(report):
    _, runs = report
    parent = runs[runs["tags.cnnstudy.kind"] == "sweep"].iloc[0]["run_id"]
    client = mlflow.tracking.MlflowClient()
    names = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.html", "report/report.md", "report/verdicts.csv"} <= names


def test_tuned_value_on_the_grid_edge_is_flagged():
    from cnnstudy.report.builder import _tuning_caveats

    runs = pd.DataFrame({"variant": ["a", "b", "c"], "learning_rate": [0.001, 0.0031, 0.03]})
    spec = {"learning_rate": {"min": 0.001, "max": 0.03, "sampling": "log"}}
    (text,) = _tuning_caveats(runs, spec)
    assert "a, c" in text and "b" not in text.split("of ")[1].split(" is")[0]
    assert _tuning_caveats(runs.iloc[[1]], spec) == []


def test_tuning_csv_has_tune_seeds_rows_per_grid_point(report):
    out, runs = report
    tuning = pd.read_csv(out / "tuning.csv")
    assert {"variant", "learning_rate", "tune_seed", "val_accuracy"} <= set(tuning.columns)
    per_point = tuning.groupby(["variant", "learning_rate"])["tune_seed"].nunique()
    assert (per_point == 2).all()  # tune_seeds = 2 (the default)
    assert set(tuning["tune_seed"]) == {1000, 1001}  # distinct from replicate seeds 0, 1
    rep = runs[runs["tags.cnnstudy.stage"] == "replicate"]
    assert not set(tuning["tune_seed"]) & set(rep["params.seed"].astype(int))


def test_budgets_and_timing_are_written(report):
    out, _ = report
    budgets = pd.read_csv(out / "budgets.csv")
    assert {"25% of epochs", "50% of epochs", "100% of epochs"} <= set(budgets["budget"])
    timing = pd.read_csv(out / "timing.csv")
    assert set(timing.columns) >= {"round", "variant", "train_images_per_second"}
    assert timing.groupby("variant").size().min() >= 1
