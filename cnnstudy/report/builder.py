"""`cnnstudy report`: which design wins, how sure we are, at what cost.

Every number is read back from MLflow (``mlflow.search_runs`` and the runs' metric
histories and artifacts); nothing is kept on the side.
"""

from __future__ import annotations

import ast
import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cnnstudy.core.layers import LAYER_COLUMNS, check_row
from cnnstudy.core.variants import colour_order
from cnnstudy.report import figures as plots
from cnnstudy.report import stats as analysis
from cnnstudy.tracking import trial_runs
from cnnstudy.tracking.queries import (
    experiment_name,
    layer_tables,
    metric_histories,
    resolved_study,
)

CURVE_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
REFERENCES = pd.DataFrame(
    [
        ("All-CNN-A, CIFAR-10, no augmentation", "test error 12.47%", "13.46%", "10.30%"),
        ("All-CNN-B, CIFAR-10, no augmentation", "test error 10.20%", "10.98%", "9.10%"),
        ("All-CNN-C, CIFAR-10, no augmentation", "test error 9.74%", "10.19%", "9.08%"),
    ],
    columns=[
        "model (Springenberg et al. 2014, Table 3)",
        "base, max pool",
        "stride of previous conv raised",
        "extra stride-2 conv replacing the pool",
    ],
)
OTHER_REFERENCES = [
    "ImageNet, CaffeNet (Mishkin's caffenet benchmark), top-1 accuracy: max pool .471, "
    "avg pool .435, all-stride .472.",
    "Shift consistency on ImageNet (Zhang 2019, 'Making convolutional networks shift-invariant "
    "again'): 85-89% for VGG and ResNet models.",
]


# ---------------------------------------------------------------- read back from MLflow


@dataclass
class ReportData:
    study: str
    parent: object
    runs: pd.DataFrame  # finished replicate runs
    failed: pd.DataFrame  # failed trials of either stage
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    resolved: dict = field(default_factory=dict)


def collect(parent) -> ReportData:  # noqa: ANN001
    all_trials = trial_runs(parent, stage=None)
    if all_trials.empty:
        raise LookupError(f"sweep run {parent.info.run_id} has no trial runs to report on.")
    runs = all_trials[(all_trials["stage"] == "replicate") & (all_trials["status"] == "FINISHED")]
    failed = all_trials[all_trials["status"] == "FAILED"]
    if runs.empty:
        raise LookupError(f"sweep run {parent.info.run_id} has no finished replicate trial yet.")
    runs = runs.reset_index(drop=True)
    return ReportData(
        experiment_name(parent),
        parent,
        runs,
        failed.reset_index(drop=True),
        curves=metric_histories(runs, CURVE_METRICS),
        layers=layer_tables(runs),
        resolved=resolved_study(parent),
    )


# ---------------------------------------------------------------- document model


@dataclass
class Doc:
    """A report as blocks, rendered to both Markdown and self-contained HTML."""

    blocks: list[tuple[str, object]] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def callout(self, text: str) -> None:
        self.blocks.append(("callout", text))

    def ul(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, df: pd.DataFrame) -> None:
        self.blocks.append(("table", df))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", (path, caption)))

    def markdown(self, rel_to: Path) -> str:
        out = []
        for kind, body in self.blocks:
            if kind.startswith("h"):
                out.append("#" * int(kind[1]) + " " + str(body))
            elif kind in ("p", "callout"):
                out.append(str(body) if kind == "p" else "> " + str(body))
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in body))  # type: ignore[union-attr]
            elif kind == "table":
                out.append(markdown_table(body))  # type: ignore[arg-type]
            elif kind == "figure":
                path, caption = body  # type: ignore[misc]
                out.append(f"![{caption}]({path.relative_to(rel_to).as_posix()})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        parts = []
        for kind, body in self.blocks:
            if kind.startswith("h"):
                parts.append(f"<{kind}>{html.escape(str(body))}</{kind}>")
            elif kind == "p":
                parts.append(f"<p>{_inline(str(body))}</p>")
            elif kind == "callout":
                parts.append(f'<p class="headline">{_inline(str(body))}</p>')
            elif kind == "ul":
                items = "".join(f"<li>{_inline(i)}</li>" for i in body)  # type: ignore[union-attr]
                parts.append(f"<ul>{items}</ul>")
            elif kind == "table":
                parts.append(body.to_html(index=False, border=0, classes="t", escape=True))  # type: ignore[union-attr]
            elif kind == "figure":
                path, caption = body  # type: ignore[misc]
                data = base64.b64encode(Path(path).read_bytes()).decode()
                parts.append(
                    f'<figure><img alt="{html.escape(caption)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>'
                    f"{html.escape(caption)}</figcaption></figure>"
                )
        return HTML_TEMPLATE.format(title=html.escape(title), body="\n".join(parts))


def _inline(text: str) -> str:
    """The little Markdown the report uses inline: **bold** and `code`."""
    out = html.escape(text)
    for marker, tag in (("**", "strong"), ("`", "code"), ("*", "em")):
        pieces = out.split(marker)
        out = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
    return out


def markdown_table(df: pd.DataFrame) -> str:
    cells = df.astype(str).replace({"nan": "", "<NA>": ""})
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.values]
    return "\n".join([head, rule, *rows])


HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1.2em; color: #1d1d1f; }}
h1 {{ font-size: 1.7em; margin-bottom: .2em; }}
h2 {{ margin-top: 1.8em; border-bottom: 1px solid #ddd; }}
table.t {{ border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }}
table.t th, table.t td {{ padding: 4px 9px; border-bottom: 1px solid #e3e3e3; text-align: left;
                         vertical-align: top; }}
table.t th {{ background: #f4f5f7; }}
figure {{ margin: 1em 0 1.6em; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 13px; }}
code {{ background: #f4f5f7; padding: 1px 4px; border-radius: 3px; }}
.headline {{ font-size: 1.15em; background: #eef6ee; padding: .8em 1em; border-radius: 6px; }}
</style></head><body>
{body}
</body></html>
"""


# ---------------------------------------------------------------- tables for humans


def _pct(x: float) -> str:
    return "" if pd.isna(x) else f"{x * 100:.2f}"


def _fmt_verdicts(v: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "factor": v["factor"],
            "a": v["a"],
            "b": v["b"],
            "n seeds": v["n"],
            "mean a-b (pts)": v["mean_diff"].map(lambda x: f"{x * 100:+.2f}"),
            "95% CI (pts)": [
                f"[{lo * 100:+.2f}, {hi * 100:+.2f}]"
                for lo, hi in zip(v["ci_low"], v["ci_high"], strict=True)
            ],
            "p": v["p_value"].map(lambda x: f"{x:.3g}"),
            "p (Holm)": v["p_adjusted"].map(lambda x: f"{x:.3g}"),
            "Cohen's d_z": v["effect_size"].map(lambda x: f"{x:.2f}"),
            "verdict": v["verdict"],
        }
    )


def _fmt_summary(s: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    lr = runs.groupby("variant")["learning_rate"].first()
    return pd.DataFrame(
        {
            "variant": s["variant"].astype(str),
            "n": s["n"],
            "test acc % (mean)": s["mean_test_accuracy"].map(_pct),
            "95% CI": [
                f"[{_pct(lo)}, {_pct(hi)}]"
                for lo, hi in zip(s["ci_low"], s["ci_high"], strict=True)
            ],
            "sd": s["std"].map(_pct),
            "tuned lr": s["variant"].astype(str).map(lr).map(lambda x: f"{x:.3g}"),
            "shift consist. %": s["shift_consistency_mean"].map(_pct),
            "border-centre pts": s["border_minus_center_mean"].map(lambda x: f"{x * 100:+.2f}"),
            "gen. gap pts": s["generalization_gap_mean"].map(lambda x: f"{x * 100:.2f}"),
            "params": s["params"].map(lambda x: f"{x:,}"),
            "MMACs": (s["macs"] / 1e6).map(lambda x: f"{x:.2f}"),
            "train img/s": s["train_images_per_second_mean"].map(lambda x: f"{x:,.0f}"),
            "infer img/s": s["infer_images_per_second_mean"].map(lambda x: f"{x:,.0f}"),
        }
    )


def _layer_table(layers: pd.DataFrame) -> pd.DataFrame:
    df = layers.copy()
    for col in ("input_shape", "output_shape"):
        df[col] = df[col].map(lambda s: tuple(ast.literal_eval(s)) if isinstance(s, str) else s)
    df["formula check"] = ["ok" if check_row(r) else "MISMATCH" for r in df.to_dict("records")]
    for col in ("input_shape", "output_shape"):
        df[col] = df[col].map(lambda t: "x".join(map(str, t)))
    for col in ("kernel", "stride"):
        df[col] = df[col].map(lambda x: "" if pd.isna(x) or x == "" else str(int(float(x))))
    order = {v: i for i, v in enumerate(colour_order())}
    df = df.sort_values("variant", key=lambda s: s.map(order), kind="stable")
    return df[[*LAYER_COLUMNS, "formula check"]].fillna("")


# ---------------------------------------------------------------- build


def build_report(data: ReportData, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    runs, order = data.runs, colour_order()

    summary = analysis.summary(runs, order)
    verdicts = analysis.factor_comparisons(runs)
    anova = analysis.two_way_anova(runs)
    claims = analysis.claims(runs)
    head = analysis.headline(runs)
    diffs = analysis.paired_diffs(runs)

    files = [out_dir / "summary.csv", out_dir / "verdicts.csv", out_dir / "claims.csv"]
    summary.to_csv(files[0], index=False, float_format="%.6g")
    verdicts.to_csv(files[1], index=False, float_format="%.6g")
    claims.to_csv(files[2], index=False, float_format="%.6g")

    figs = {
        "mean_ci": plots.mean_ci(summary, fig_dir / "mean_ci.png"),
        "paired": plots.paired_differences(diffs, verdicts, fig_dir / "paired_differences.png")
        if not diffs.empty
        else None,
        "curves": plots.learning_curves(data.curves, fig_dir / "learning_curves.png"),
        "cost": plots.cost_tradeoffs(summary, fig_dir / "cost_tradeoffs.png"),
        "probes": plots.probes(runs, fig_dir / "probes.png"),
    }
    doc = _document(data, summary, verdicts, anova, claims, head, figs)
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(doc.markdown(out_dir))
    page.write_text(doc.html(f"cnnstudy report: {data.study}"))
    files += [md, page, *(p for p in figs.values() if p)]
    return files


def _document(data, summary, verdicts, anova, claims, head, figs) -> Doc:  # noqa: ANN001, PLR0915
    runs, tags = data.runs, data.parent.data.tags
    fixed = data.resolved.get("fixed", {})
    sci = data.resolved.get("scientific", {})
    n_seeds = head["n_seeds"]
    doc = Doc()
    doc.h(f"cnnstudy report: {data.study}", 1)
    doc.p(
        f"Which CNN design choice wins on **{runs['dataset'].iloc[0]}**? "
        f"{runs['variant'].nunique()} variants (padding x downsampling), {n_seeds} paired seeds "
        f"each, learning rate tuned per variant. Sweep run `{data.parent.info.run_id}`."
    )

    doc.h("Headline")
    tied = ", ".join(f"`{v}`" for v in head["tied"]) or "none"
    doc.callout(
        f"**Best variant: `{head['best']}`**, {head['best_mean'] * 100:.2f}% mean test accuracy "
        f"(n={n_seeds} seeds). Statistically indistinguishable from it: {tied}. "
        f"Significantly worse: {', '.join(f'`{v}`' for v in head['beaten']) or 'none'}."
    )
    doc.p(
        "Rule: a difference counts only if its paired 95% t-interval excludes 0 **and** its "
        "Holm-adjusted paired t-test p < 0.05. Otherwise the report says "
        '"no significant difference" and names no winner. The CI is per comparison; the Holm '
        "adjustment guards against finding a winner by testing several pairs, so a CI that "
        "only just excludes 0 can still fall short."
    )

    doc.h("Verdict per design factor")
    doc.p(
        "Each comparison is paired by seed (same data order and initial seed), averaging over "
        "the other factor's levels. Effect size: Cohen's d_z (mean paired difference / its sd). "
        "p-values are Holm-adjusted over the four comparisons."
    )
    for r in verdicts.itertuples():
        doc.p(
            f"**{r.factor}: {r.a} vs {r.b}: {r.verdict}.** Mean difference "
            f"{r.mean_diff * 100:+.2f} pts, "
            f"95% CI [{r.ci_low * 100:+.2f}, {r.ci_high * 100:+.2f}], "
            f"p (Holm) = {r.p_adjusted:.3g}, d_z = {r.effect_size:.2f}."
        )
    doc.table(_fmt_verdicts(verdicts))
    if figs["paired"]:
        doc.figure(figs["paired"], "Paired differences per factor comparison")

    doc.h("Two-way ANOVA (padding x downsampling)")
    if anova.empty:
        doc.p("Not enough levels or seeds for the ANOVA.")
    else:
        doc.p(
            "Type-II ANOVA on test accuracy with seed as a block factor (statsmodels OLS). "
            "eta_sq is the share of total variance."
        )

        def fmt(spec: str):  # noqa: ANN202
            return lambda x: "" if pd.isna(x) else format(x, spec)

        doc.table(
            anova.assign(
                sum_sq=anova["sum_sq"].map(fmt(".3g")),
                F=anova["F"].map(fmt(".2f")),
                p_value=anova["p_value"].map(fmt(".3g")),
                df=anova["df"].map(fmt(".0f")),
                eta_sq=anova["eta_sq"].map(fmt(".3f")),
            )
        )

    doc.h("Claims scorecard")
    doc.p(
        "Directional claims are **supported** when the paired effect is significant in the "
        "claimed direction, **refuted** when significant the other way, else **inconclusive** "
        '(Holm over the claims). "As good as" is an equivalence claim: supported when the '
        "95% CI lies within "
        f"+-{analysis.EQUIVALENCE_MARGIN * 100:.0f} pt, refuted when significantly worse beyond it."
    )
    doc.table(
        claims.assign(
            p_adjusted=claims["p_adjusted"].map(lambda x: "" if pd.isna(x) else f"{x:.3g}")
        )
    )

    doc.h("Figures")
    doc.figure(figs["mean_ci"], "Test accuracy per variant, mean and 95% t-interval over seeds")
    doc.figure(figs["curves"], "Validation curves: mean and 95% band over seeds")
    doc.figure(figs["cost"], "Accuracy vs MACs, parameters and train time, with the Pareto front")
    doc.figure(
        figs["probes"],
        "Probes per variant: shift consistency, border - centre accuracy, generalization gap",
    )

    doc.h("Per-variant summary")
    doc.table(_fmt_summary(summary, runs))
    doc.p(
        "train img/s is steady-state training throughput (epochs after the first, validation "
        "excluded); infer img/s is `predict` throughput at batch 256, both on the sweep's device."
    )

    doc.h("Shape arithmetic")
    doc.p(
        "Each variant's layers as Keras built them (from the trial's `layers.csv` artifact), "
        "checked against `(W - F + 2P)/S + 1` (for `same`, Keras's `ceil(W/S)`) and "
        "`F*F*C_in*C_out + C_out`. MACs are per image."
    )
    doc.table(_layer_table(data.layers))

    doc.h("Published reference points (other datasets and models, not comparable one to one)")
    doc.table(REFERENCES)
    doc.ul(OTHER_REFERENCES)

    if not data.failed.empty:
        doc.h("Failed trials (excluded from every statistic)")
        doc.table(data.failed[["stage", "variant", "seed", "learning_rate", "failure"]].fillna(""))

    doc.h("Caveats and reproduction")
    stride_mode = sci.get(
        "stride_mode", runs["stride_mode"].iloc[0] if "stride_mode" in runs else "?"
    )
    doc.ul(
        [
            f"Dataset `{runs['dataset'].iloc[0]}`, {int(runs['n_train'].iloc[0])} training images; "
            f"n = {n_seeds} seeds per variant. Small n: wide intervals are expected.",
            f"`stride` variant: stride_mode = `{stride_mode}` "
            + (
                "(each stage's last conv has stride 2)."
                if stride_mode == "last_conv"
                else "(an extra stride-2 conv replaces the pool, as in All-CNN)."
            ),
            "Fixed settings: " + ", ".join(f"{k} = {v}" for k, v in sorted(fixed.items())) + ".",
            f"Epochs: {fixed.get('epochs', '?')}; short training favours variants that learn fast.",
            *_tuning_caveats(runs, data.resolved.get("nuisance", {})),
            *_border_caveat(runs),
            f"Probe inputs: shift of up to {fixed.get('probe_shift', '?')} px, probe seed "
            f"{fixed.get('probe_seed', '?')}; border/centre translations move the content's "
            "bounding box (pixels > 0.1) onto an edge or to the centre, losing no content pixel.",
            f"git commit `{tags.get('cnnstudy.git_commit', '?')}`, Keras backend "
            f"`{tags.get('cnnstudy.backend', '?')}`, device `{tags.get('cnnstudy.device', '?')}`.",
            "Versions: "
            + ", ".join(f"{k[8:]} {v}" for k, v in sorted(tags.items()) if k.startswith("version."))
            + ".",
            f"Reproduce: `make sweep EXP={tags.get('cnnstudy.study_file', '?')} && make report "
            f"EXP={tags.get('cnnstudy.study_file', '?')}`",
        ]
    )
    return doc


def _grid_edges(spec) -> tuple[float, float] | None:  # noqa: ANN001
    if isinstance(spec, dict) and "min" in spec:
        return float(spec["min"]), float(spec["max"])
    if isinstance(spec, list) and len(spec) > 1:
        return float(min(spec)), float(max(spec))
    return None


def _tuning_caveats(runs: pd.DataFrame, nuisance: dict) -> list[str]:
    """Flag variants whose tuned value sits on the edge of the grid: widen the range."""
    out = []
    for name, spec in nuisance.items():
        edges = _grid_edges(spec)
        if edges is None or name not in runs:
            continue
        chosen = runs.groupby("variant")[name].first()
        at_edge = [v for v, x in chosen.items() if np.isclose(x, edges, rtol=1e-3).any()]
        if at_edge:
            out.append(
                f"**Tuning at the edge:** the best {name} of {', '.join(at_edge)} is an end "
                f"of the tuned range [{edges[0]:g}, {edges[1]:g}]; a wider range might help "
                "them (the comparison is fair only if each variant's optimum is inside)."
            )
    return out


def _border_caveat(runs: pd.DataFrame) -> list[str]:
    if "border_offset_px" not in runs or "border_minus_center" not in runs:
        return []
    drop = runs["border_minus_center"].mean() * 100
    return [
        f"Border probe: placing the content on an edge moves it "
        f"{runs['border_offset_px'].mean():.1f} px on average from the centred placement; "
        f"border accuracy is {drop:+.1f} pts vs centred over all variants, so the probe mixes "
        "padding with plain sensitivity to large translations. Compare variants, not levels."
    ]


def summarize_for_terminal(out_dir: Path) -> str:
    verdicts = pd.read_csv(out_dir / "verdicts.csv")
    claims = pd.read_csv(out_dir / "claims.csv")
    lines = [
        f"{r.factor:<13} {r.a} vs {r.b}: {r.verdict} ({r.mean_diff * 100:+.2f} pts, "
        f"CI [{r.ci_low * 100:+.2f}, {r.ci_high * 100:+.2f}], p_holm {r.p_adjusted:.3g})"
        for r in verdicts.itertuples()
    ]
    lines += [f"claim: {r.claim}: {r.verdict}" for r in claims.itertuples()]
    return "\n".join(lines)
