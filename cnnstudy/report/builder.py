"""`cnnstudy report`: which design wins, how sure we are, at what cost.

Every number is read back from MLflow (``mlflow.search_runs`` and the runs' metric
histories and artifacts); nothing is kept on the side.
"""

from __future__ import annotations

import ast
import base64
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from cnnstudy.core.layers import LAYER_COLUMNS, check_row
from cnnstudy.core.variants import colour_order, variants
from cnnstudy.report import budgets as budget_analysis
from cnnstudy.report import figures as plots
from cnnstudy.report import primary
from cnnstudy.report import stats as analysis
from cnnstudy.tracking import (
    compare_runs_url,
    export_runs,
    log_report,
    parent_table,
    set_note,
    trial_runs,
)
from cnnstudy.tracking.queries import (
    experiment_name,
    layer_tables,
    metric_histories,
    resolved_study,
)

CURVE_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
TIMING_TABLE = "timing/timing.json"  # logged by run.lifecycle's timing pass
REFERENCES = pd.DataFrame(
    [
        ("A, CIFAR-10, no augmentation", "12.47%", "13.46%", "10.21%", "10.30%"),
        ("B, CIFAR-10, no augmentation", "10.20%", "10.98%", "9.33%", "9.10%"),
        ("C, CIFAR-10, no augmentation", "9.74%", "10.19%", "9.31%", "9.08%"),
    ],
    columns=[
        "model (Springenberg et al. 2014, Table 3; test error)",
        "base, max pool (maxpool)",
        "Strided-CNN: stride of previous conv raised (stride)",
        "ConvPool-CNN: extra conv, then max pool (convpool)",
        "All-CNN: extra stride-2 conv replacing the pool (allconv)",
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
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)  # finished tuning trials
    timing: pd.DataFrame = field(default_factory=pd.DataFrame)  # the interleaved timing pass


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
        tuning=all_trials[
            (all_trials["stage"] == "tune") & (all_trials["status"] == "FINISHED")
        ].reset_index(drop=True),
        timing=parent_table(parent, TIMING_TABLE),
    )


# ---------------------------------------------------------------- Markdown and HTML

# CommonMark plus GFM tables; raw HTML off, so a value like "<NA>" reads as text.
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
# Brackets make a link only as "](", "][" or "]:", so an interval "[lo, hi]" stays bare.
_SPECIAL = re.compile(r"([\\`*<>|&~]|\](?=[(\[:]))")
# An underscore between two ASCII letters or digits can never open or close emphasis
# (CommonMark's flanking rules), so `same_maxpool` needs no backslash and stays readable.
_LOOSE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(value: object) -> str:
    """Backslash-escape what Markdown would read as markup, so ``value`` comes out literally."""
    return _LOOSE_UNDERSCORE.sub(r"\\_", _SPECIAL.sub(r"\\\1", str(value)))


def md_code(value: object) -> str:
    """An inline code span; a fence longer than any backtick run inside keeps it whole."""
    text = str(value)
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a GFM pipe table whose cells read literally, in Markdown and in HTML."""
    cells = df.astype(object).where(df.notna(), "").astype(str)  # missing -> empty cell
    head = "| " + " | ".join(md_escape(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = [
        "| " + " | ".join(md_escape(v.replace("\n", " ")) for v in row) + " |"
        for row in cells.values
    ]
    return "\n".join([head, rule, *rows])


def _pct(x: float) -> str:
    return "" if pd.isna(x) else f"{x * 100:.2f}"


def _pts(x: float) -> str:
    return "" if pd.isna(x) else f"{x * 100:+.2f}"


def _fmt(x: float, spec: str) -> str:
    return "" if pd.isna(x) else format(x, spec)


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("cnnstudy.report", "templates"),
        # The page is HTML and escapes its title; the report is Markdown, escaped by `esc`.
        autoescape=select_autoescape(["html.j2"], default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        esc=md_escape,
        code=md_code,
        codes=lambda xs: ", ".join(map(md_code, xs)) or "none",
        md_table=markdown_table,
        pct=_pct,
        pts=_pts,
        fmt=_fmt,
    )
    return env


TEMPLATES = _templates()


def render_markdown(context: dict) -> str:
    """The report's Markdown: ``templates/report.md.j2`` filled in with ``context``."""
    text = TEMPLATES.get_template("report.md.j2").render(context)
    return re.sub(r"\n{3,}", "\n\n", text)  # optional sections leave blank runs


def to_html(markdown: str, title: str, base: Path | None = None) -> str:
    """A self-contained HTML page of ``markdown``: images under ``base`` become data URIs."""
    tokens = MARKDOWN.parse(markdown)
    _style(tokens)
    if base is not None:
        _embed_images(tokens, base)
    body = MARKDOWN.renderer.render(tokens, MARKDOWN.options, {})
    return TEMPLATES.get_template("page.html.j2").render(title=title, body=Markup(body))


def _style(tokens: list[Token]) -> None:
    """The page's CSS hooks: tables are ``table.t``, the quoted headline ``p.headline``.
    (The Markdown quotes the headline, its only blockquote, so it stands out there too.)"""
    quoted = 0
    for tok in tokens:
        if tok.type == "table_open":
            tok.attrSet("class", "t")
        elif tok.type in ("blockquote_open", "blockquote_close"):
            quoted += 1 if tok.type == "blockquote_open" else -1
        elif tok.type == "paragraph_open" and quoted:
            tok.attrSet("class", "headline")


def _embed_images(tokens: list[Token], base: Path) -> None:
    """Relative image links (``figures/x.png``) become data URIs, so the page travels alone."""
    for tok in tokens:
        for child in tok.children or ():
            src = str(child.attrGet("src") or "")
            if child.type == "image" and ":" not in src and (base / src).is_file():
                kind = mimetypes.guess_type(src)[0] or "application/octet-stream"
                data = base64.b64encode((base / src).read_bytes()).decode()
                child.attrSet("src", f"data:{kind};base64,{data}")


# ---------------------------------------------------------------- tables for humans


def _fmt_verdicts(v: pd.DataFrame) -> pd.DataFrame:
    def pts(x: float) -> str:
        return f"{x * 100:+.2f}"

    return pd.DataFrame(
        {
            "factor": v["factor"],
            "a": v["a"],
            "b": v["b"],
            "n seeds": v["n_seeds"],
            "a-b (pts)": v["mean_diff"].map(pts),
            "95% CI": _intervals(v["ci_low"], v["ci_high"], pts),
            "p (Holm)": v["p_adjusted"].map(_g3),
            "90% CI (TOST)": _intervals(v["equiv_ci_low"], v["equiv_ci_high"], pts),
            "p (TOST)": v["p_equivalence"].map(_g3),
            "MDE (pts)": v["mde"].map(lambda x: f"{x * 100:.2f}"),
            "seeds for margin": v["seeds_needed"].map(lambda x: f"{x:.0f}"),
            "verdict": v["verdict"],
        }
    )


def _intervals(lows: pd.Series, highs: pd.Series, fmt) -> list[str]:  # noqa: ANN001
    """'[low, high]' per row, each end formatted by ``fmt``."""
    return [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(lows, highs, strict=True)]


def _fmt_summary(s: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    lr = runs.groupby("variant")["learning_rate"].first()
    return pd.DataFrame(
        {
            "variant": s["variant"].astype(str),
            "n": s["n"],
            "test acc % (mean)": s["mean_test_accuracy"].map(_pct),
            "95% CI": _intervals(s["ci_low"], s["ci_high"], _pct),
            "sd": s["std"].map(_pct),
            "P(best)": s["p_best"].map(lambda x: f"{x:.2f}"),
            "tuned lr": s["variant"].astype(str).map(lr).map(lambda x: f"{x:.3g}"),
            "shift consist. %": s["shift_consistency_mean"].map(_pct),
            "border drop pts": (
                s["border_drop_mean"] if "border_drop_mean" in s else pd.Series(np.nan, s.index)
            ).map(lambda x: "n/a" if pd.isna(x) else f"{x * 100:+.2f}"),
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


def make_report(parent, results: Path) -> Path:  # noqa: ANN001
    """Collect, build and export the report of sweep run ``parent`` under ``results/<study>``
    and log it to that run; returns the report's directory."""
    data = collect(parent)
    out_dir = results / data.study
    print(
        f"report on sweep {parent.info.run_id} ({len(data.runs)} replicate runs, "
        f"{len(data.failed)} failed trials) ...",
        flush=True,
    )
    build_report(data, out_dir)
    export_runs(parent, out_dir)
    log_report(parent.info.run_id, out_dir)
    # the sweep run's description in the MLflow UI becomes the verdict
    set_note(parent.info.run_id, headline_markdown((out_dir / "report.md").read_text()))
    return out_dir


def headline_markdown(md: str) -> str:
    """The report's headline callout (its first blockquote) as Markdown, without the ``>``."""
    lines = md.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(">")), len(lines))
    block = []
    for line in lines[start:]:
        if not line.startswith(">"):
            break
        block.append(line[1:].removeprefix(" "))
    return "\n".join(block)


def build_report(data: ReportData, out_dir: Path) -> list[Path]:
    """The statistics as CSV, the figures, and report.md / report.html from the template."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    runs, order = data.runs, colour_order()
    margin = float(data.resolved.get("study", {}).get("margin", 0.005))

    model = primary.fit_primary(runs)
    verdicts = primary.verdicts(model, margin)
    head = primary.headline(model, runs, margin)
    summary = analysis.summary(runs, order)
    summary["p_best"] = summary["variant"].astype(str).map(head["p_best_all"]).fillna(0.0)
    tuning, chosen = _tuning_table(data), _chosen(runs, data.resolved)
    edge = _edge_variants(chosen, data.resolved.get("nuisance", {}))
    timing = data.timing
    budget_table = budget_analysis.budgets(
        data.curves, primary.FACTORS, runs[["variant", "padding", "downsample"]]
    )
    flags = budget_analysis.convergence(data.curves)
    rising = flags[flags["still_rising"]]["variant"].tolist()
    claims = analysis.claims(runs, verdicts, margin, timing, rising)

    tables = {
        "summary.csv": summary,
        "verdicts.csv": verdicts,
        "claims.csv": claims,
        "tuning.csv": tuning,
        "budgets.csv": budget_table,
        "timing.csv": timing,
        "sensitivity.csv": primary.paired_sensitivity(model),
    }
    files = []
    for name, table in tables.items():
        table.to_csv(out_dir / name, index=False, float_format="%.6g")
        files.append(out_dir / name)

    figs = {
        "mean_ci": plots.mean_ci(summary, fig_dir / "mean_ci.png"),
        "contrasts": plots.contrasts(verdicts, margin, fig_dir / "contrasts.png"),
        "curves": plots.learning_curves(data.curves, fig_dir / "learning_curves.png"),
        "budgets": plots.budgets(budget_table, fig_dir / "budgets.png"),
        "tuning": plots.tuning(tuning, {v: c["learning_rate"] for v, c in chosen.items()},
                               fig_dir / "tuning.png") if not tuning.empty else None,
        "cost": plots.cost_tradeoffs(summary, fig_dir / "cost_tradeoffs.png"),
        "probes": plots.probes(runs, fig_dir / "probes.png"),
    }  # fmt: skip
    winners = budget_analysis.winner_by_budget(budget_table)
    anova = primary.anova(model)
    context = {
        **_context(data),
        "head": head,
        "margin_pts": margin * 100,
        "n_seeds": head["n_seeds"],
        "df_resid": model.df,
        "formula": primary.formula(model.data, model.metric),
        "verdicts": verdicts.to_dict("records"),
        "verdict_table": _fmt_verdicts(verdicts),
        "sensitivity_table": _fmt_sensitivity(tables["sensitivity.csv"]),
        "anova_table": None if anova.empty else _fmt_anova(anova),
        "claims_table": claims.assign(p_adjusted=claims["p_adjusted"].map(_g3)),
        "summary_table": _fmt_summary(summary, runs),
        "edge": edge,
        "two_point_grid": _two_point_grid(data.resolved),
        "tune_epochs": _short_tuning(data.resolved),
        "epochs": data.resolved.get("fixed", {}).get("epochs"),
        "tuning_table": _fmt_tuning(tuning, chosen),
        "timing_table": _fmt_timing(timing),
        "winners": winners,
        "winner_changes": len(set(winners.values())) > 1,
        "rising": rising,
        "flags_table": flags.assign(
            last_quarter_gain=flags["last_quarter_gain"].map(lambda x: f"{x * 100:+.2f}"),
            gain_sd=flags["gain_sd"].map(lambda x: f"{x * 100:.2f}" if np.isfinite(x) else "-"),
        ).rename(
            columns={
                "last_quarter_gain": "val acc gain, last quarter (pts)",
                "gain_sd": "sd over seeds (pts)",
            }
        ),
        "rising_threshold_pts": budget_analysis.RISING_THRESHOLD * 100,
        "budget_table": _fmt_budgets(budget_table),
        # the Markdown links figures relative to itself; the HTML page embeds them
        "figs": {k: p.relative_to(out_dir).as_posix() if p else None for k, p in figs.items()},
    }
    md, page = out_dir / "report.md", out_dir / "report.html"
    text = render_markdown(context)
    md.write_text(text)
    page.write_text(to_html(text, f"cnnstudy report: {data.study}", base=out_dir))
    files += [md, page, *(p for p in figs.values() if p)]
    return files


def _tuning_table(data: ReportData) -> pd.DataFrame:
    """tuning.csv: one row per tuning trial (variant, each nuisance value, tune seed, score)."""
    t = data.tuning
    if t.empty:
        return pd.DataFrame(columns=["variant", "tune_seed", "val_accuracy"])
    nuisance = [k for k in data.resolved.get("nuisance", {"learning_rate": 0}) if k in t]
    out = t[["variant", *nuisance, "seed", "val_accuracy"]].rename(columns={"seed": "tune_seed"})
    return out.sort_values(["variant", *nuisance, "tune_seed"]).reset_index(drop=True)


def _chosen(runs: pd.DataFrame, resolved: dict) -> dict[str, dict[str, float]]:
    """Each variant's tuned nuisance values, as its replicate runs trained with them."""
    names = [k for k in resolved.get("nuisance", {"learning_rate": 0}) if k in runs]
    first = runs.groupby("variant")[names].first()
    return {v: row.to_dict() for v, row in first.iterrows()}


def _edge_variants(chosen: dict[str, dict[str, float]], nuisance: dict) -> list[str]:
    """Variants whose tuned value is an end of its grid: their optimum may lie outside."""
    out = []
    for variant, values in chosen.items():
        for name, value in values.items():
            edges = _grid_edges(nuisance.get(name))
            if edges and np.isclose(value, edges, rtol=1e-3).any():
                out.append(variant)
    return sorted(set(out), key=colour_order().index)


def _fmt_sensitivity(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": df["a"],
            "b": df["b"],
            "n seeds": df["n_seeds"],
            "mean a-b (pts)": df["mean_diff"].map(lambda x: f"{x * 100:+.2f}"),
            "95% CI (pts)": [
                f"[{lo * 100:+.2f}, {hi * 100:+.2f}]"
                for lo, hi in zip(df["ci_low"], df["ci_high"], strict=True)
            ],
            "p (Holm, paired t)": df["p_adjusted"].map(_g3),
        }
    )


def _fmt_tuning(tuning: pd.DataFrame, chosen: dict) -> pd.DataFrame:
    if tuning.empty:
        return tuning
    keys = [c for c in tuning.columns if c not in ("variant", "tune_seed", "val_accuracy")]
    g = tuning.groupby(["variant", *keys])["val_accuracy"]
    out = pd.DataFrame({"mean val acc %": g.mean() * 100, "sd": g.std() * 100, "n": g.size()})
    out = out.reset_index()
    out["chosen"] = [
        "yes" if all(np.isclose(r[k], chosen.get(r["variant"], {}).get(k, np.nan)) for k in keys)
        else ""
        for r in out.to_dict("records")
    ]  # fmt: skip
    return out.round({"mean val acc %": 2, "sd": 2})


def _fmt_timing(timing: pd.DataFrame) -> pd.DataFrame | None:
    if timing.empty:
        return None
    g = timing.groupby("variant")
    q = {
        m: g[m].quantile([0.0, 0.5, 1.0]).unstack()
        for m in ("train_images_per_second", "infer_images_per_second")
    }
    order = [v for v in colour_order() if v in set(timing["variant"])]
    return pd.DataFrame(
        {
            "variant": order,
            "rounds": [int(g.size()[v]) for v in order],
            "train img/s, median [min, max]": [
                f"{q['train_images_per_second'].loc[v, 0.5]:,.0f} "
                f"[{q['train_images_per_second'].loc[v, 0.0]:,.0f}, "
                f"{q['train_images_per_second'].loc[v, 1.0]:,.0f}]" for v in order
            ],
            "infer img/s, median [min, max]": [
                f"{q['infer_images_per_second'].loc[v, 0.5]:,.0f} "
                f"[{q['infer_images_per_second'].loc[v, 0.0]:,.0f}, "
                f"{q['infer_images_per_second'].loc[v, 1.0]:,.0f}]" for v in order
            ],
        }
    )  # fmt: skip


def _fmt_budgets(table: pd.DataFrame) -> pd.DataFrame:
    variants = table[table["kind"] == "variant"]
    budgets = list(dict.fromkeys(table["budget"]))
    wide = variants.pivot(index="name", columns="budget", values="rank").reindex(columns=budgets)
    wide = wide.astype("Int64")
    order = [v for v in colour_order() if v in wide.index]
    wide = wide.loc[order].reset_index().rename(columns={"name": "variant (rank)"})
    contrasts = (
        table[table["kind"] == "contrast"]
        .pivot(index="name", columns="budget", values="value")
        .reindex(columns=budgets)
    )
    contrasts = (contrasts * 100).round(2).reset_index().rename(columns={"name": "contrast (pts)"})
    return pd.concat(
        [
            wide.astype(str),
            contrasts.rename(columns={"contrast (pts)": "variant (rank)"}).astype(str),
        ],
        ignore_index=True,
    )


def _context(data: ReportData) -> dict:
    """What the template needs besides the statistics: the study, its settings, provenance."""
    runs = data.runs
    failed = data.failed
    return {
        "study": data.study,
        "run_id": data.parent.info.run_id,
        "compare_url": compare_runs_url(data.parent),
        "dataset": runs["dataset"].iloc[0],
        "n_train": int(runs["n_train"].iloc[0]),
        "n_variants": runs["variant"].nunique(),
        "layer_table": _layer_table(data.layers),
        "references": REFERENCES,
        "other_references": OTHER_REFERENCES,
        "failed_table": None
        if failed.empty
        else failed[["stage", "variant", "seed", "learning_rate", "failure"]].fillna(""),
        "levels": {v.downsample: v.level.summary for v in variants().values()},
        "match": data.resolved.get("study", {}).get("match", "none"),
        "fixed": data.resolved.get("fixed", {}),
        "caveats": [
            *_tuning_caveats(runs, data.resolved.get("nuisance", {})),
        ],
        "prov": _provenance(data.parent.data.tags),
    }


def _provenance(tags: dict) -> dict:
    return {
        "git_commit": tags.get("mlflow.source.git.commit") or tags.get("cnnstudy.git_commit", "?"),
        "backend": tags.get("cnnstudy.backend", "?"),
        "device": tags.get("cnnstudy.device", "?"),
        "versions": [f"{k[8:]} {v}" for k, v in sorted(tags.items()) if k.startswith("version.")],
        "study_file": tags.get("cnnstudy.study_file", "?"),
    }


def _g3(x: float) -> str:
    return _fmt(x, ".3g")


def _fmt_anova(anova: pd.DataFrame) -> pd.DataFrame:
    specs = {"sum_sq": ".3g", "F": ".2f", "p_value": ".3g", "df": ".0f", "eta_sq": ".3f"}
    return anova.assign(**{c: anova[c].map(lambda x, s=s: _fmt(x, s)) for c, s in specs.items()})


def _short_tuning(resolved: dict) -> int:
    """``tune_epochs`` where tuning runs are shorter than the replicates, else 0."""
    tune = resolved.get("study", {}).get("tune_epochs", 0) or 0
    return tune if tune < resolved.get("fixed", {}).get("epochs", 0) else 0


def _two_point_grid(resolved: dict) -> bool:
    """Whether a tuned range has only its two ends as grid points (every choice is an end):
    a range {min, max} gridded into [study] budget = 2 points, or a list of two values."""
    budget = resolved.get("study", {}).get("budget")
    return any(
        (isinstance(spec, dict) and "min" in spec and budget == 2)
        or (isinstance(spec, list) and len(spec) == 2)
        for spec in resolved.get("nuisance", {}).values()
    )


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
