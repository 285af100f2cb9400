"""The report's Markdown -> HTML path, without a sweep: well-nested tags, literal code and cells."""

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from cnnstudy.report.builder import markdown_table, md_code, render_markdown, to_html

VOID = {"img", "br", "meta", "hr", "link", "input"}
PNG = b"\x89PNG\r\n\x1a\n not decoded, only embedded"


class _Nesting(HTMLParser):
    """A stack of open tags; an end tag that does not close the innermost one is an error."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else ''}>")
        else:
            self.stack.pop()


def assert_well_nested(page: str) -> None:
    parser = _Nesting()
    parser.feed(page)
    parser.close()
    assert parser.errors == [], parser.errors[:5]
    assert parser.stack == [], f"unclosed: {parser.stack}"


def test_the_nesting_check_catches_misnested_tags():
    with pytest.raises(AssertionError):
        assert_well_nested("<p><code>F<em>F</code>C</em></p>")
    with pytest.raises(AssertionError):
        assert_well_nested("<p><code>x</p>")
    assert_well_nested('<p>a<br><img src="x"></p>')


TRICKY = ["a*b", "p|q", "`t`", "_u_", "same_maxpool", "[a](b)", "<NA>", "x & y"]


def test_code_spans_and_table_cells_come_out_literally():
    table = pd.DataFrame({"cell": TRICKY, "a*b|c": range(len(TRICKY))})
    md = (
        "# Shapes\n\nParameters: `F*F*C_in*C_out + C_out`; the best is `same_maxpool`; "
        f"a fenced backtick: {md_code('a`b')}.\n\n{markdown_table(table)}\n"
    )
    page = to_html(md, "t")
    assert_well_nested(page)
    assert "<code>F*F*C_in*C_out + C_out</code>" in page
    assert "<code>same_maxpool</code>" in page
    assert "<code>a`b</code>" in page
    for cell in ("a*b", "p|q", "`t`", "_u_", "same_maxpool", "[a](b)", "&lt;NA&gt;", "x &amp; y"):
        assert f"<td>{cell}</td>" in page, cell
    assert "<th>a*b|c</th>" in page
    assert "<em>" not in page and "<a " not in page  # no cell turned into markup
    assert page.count("<tr>") == len(TRICKY) + 1  # no cell split the row


def test_markdown_table_keeps_intervals_and_identifiers_readable():
    md = markdown_table(pd.DataFrame({"ci": ["[-1.0, +2.0]"], "v": ["same_maxpool"]}))
    assert "| [-1.0, +2.0] | same_maxpool |" in md


def test_relative_images_are_embedded_in_the_page_only(tmp_path: Path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "x.png").write_bytes(PNG)
    md = "![A figure](figures/x.png)\n\n*A figure*\n"
    page = to_html(md, "t <title>", base=tmp_path)
    assert_well_nested(page)
    assert page.count('src="data:image/png;base64,') == 1
    assert "figures/x.png" not in page
    assert "<title>t &lt;title&gt;</title>" in page  # the page escapes its title


def _context(**extra) -> dict:
    """The smallest context the report template renders from."""
    frame = pd.DataFrame({"x": ["a*b"]})
    verdict = {
        "factor": "padding",
        "a": "same",
        "b": "valid",
        "verdict": "inconclusive",
        "mean_diff": 0.01,
        "ci_low": -0.02,
        "ci_high": 0.04,
        "p_adjusted": 0.5,
        "equiv_ci_low": -0.015,
        "equiv_ci_high": 0.035,
        "mde": 0.03,
        "seeds_needed": 12,
    }
    return {
        "study": "my_study",
        "run_id": "abc123",
        "compare_url": None,
        "dataset": "mnist5k",
        "n_train": 100,
        "n_variants": 4,
        "n_seeds": 2,
        "head": {
            "best": "same_maxpool",
            "best_mean": 0.9,
            "p_best": 0.8,
            "tied": [],
            "beaten": ["x_y"],
        },
        "margin_pts": 0.5,
        "df_resid": 10,
        "formula": "test_accuracy ~ C(padding) * C(downsample) + C(seed)",
        "sensitivity_table": frame,
        "edge": ["same_stride"],
        "two_point_grid": True,
        "tune_epochs": 4,
        "epochs": 12,
        "tuning_table": frame,
        "timing_table": None,
        "winners": {"25% of epochs": "same_maxpool", "100% of epochs": "same_stride"},
        "winner_changes": True,
        "rising": [],
        "flags_table": frame,
        "rising_threshold_pts": 0.5,
        "budget_table": frame,
        "levels": {"maxpool": "2x2 max pool"},
        "match": "none",
        "verdicts": [verdict],
        "verdict_table": frame,
        "anova_table": None,
        "claims_table": frame,
        "figs": {
            k: f"figures/{k}.png"
            for k in ("mean_ci", "contrasts", "curves", "budgets", "cost", "probes")
        }
        | {"tuning": None},
        "summary_table": frame,
        "layer_table": frame,
        "references": frame,
        "other_references": ["a note"],
        "failed_table": frame,
        "fixed": {"epochs": 1, "probe_shift": 3, "probe_seed": 0, "dense_units": [64]},
        "caveats": ["**Tuning at the edge:** widen it."],
        "prov": {
            "git_commit": "deadbeef",
            "backend": "tensorflow",
            "device": "cpu",
            "versions": ["keras 3"],
            "study_file": "experiments/smoke.toml",
        },
        **extra,
    }


def test_the_template_renders_every_section_and_the_mlflow_link():
    md = render_markdown(_context(compare_url="http://127.0.0.1:5000/#/compare-runs?runs=[1]"))
    for heading in ("Headline", "Verdict per design factor", "Failed trials", "Caveats"):
        assert f"\n## {heading}" in md, heading
    assert "Not enough levels or seeds for the ANOVA." in md
    assert "**Provisional:**" in md and "are provisional.\nThe grid has two points" in md
    assert "in tuning runs of 4 epochs with their\nown schedule (the replicates train 12" in md
    assert "[Open the replicate runs in MLflow](<http://127.0.0.1:5000/" in md
    assert md.count("](figures/") == 6 and "\n\n\n" not in md  # tuning: None
    page = to_html(md, "t")
    assert_well_nested(page)
    assert "Open the replicate runs in MLflow</a>" in page
    assert '<p class="headline"><strong>Best variant: <code>same_maxpool</code>' in page
    assert "<code>x_y</code>" in page and "<strong>Tuning at the edge:</strong>" in page
    assert "Open the replicate runs" not in render_markdown(_context())


def test_a_two_point_grid_is_recognised():
    from cnnstudy.report.builder import _two_point_grid

    lr = {"min": 1e-3, "max": 1e-2, "sampling": "log"}
    assert _two_point_grid({"study": {"budget": 2}, "nuisance": {"learning_rate": lr}})
    assert not _two_point_grid({"study": {"budget": 3}, "nuisance": {"learning_rate": lr}})
    assert _two_point_grid({"study": {"budget": 4}, "nuisance": {"dropout": [0.0, 0.5]}})
