"""The atlas: does a verdict hold across datasets? Effects per study, pooled with their
uncertainty, and the report that answers it.

Each study's effect for a comparison is its primary-analysis contrast (``verdicts.csv``:
``mean_diff`` and its standard error ``se``). Effects are pooled by a random-effects model
(DerSimonian-Laird, statsmodels' ``combine_effects``, with tau^2 truncated at 0 as DL
defines it; statsmodels leaves it negative): tau^2 is the between-study variance,
I^2 the share of the spread that is heterogeneity rather than noise. A pooled verdict follows
the study rules: Holm over the comparisons, ``<a> wins`` when significant with the 95% CI on
a's side, ``equivalent`` when the 90% CI lies inside +-margin, else ``inconclusive``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from statsmodels.stats.meta_analysis import combine_effects  # noqa: E402

from cnnstudy.report.primary import ALPHA, holm  # noqa: E402

EFFECT_COLUMNS = [
    "study", "dataset", "comparison", "a", "b", "n_seeds", "estimate", "ci_low", "ci_high",
    "se", "verdict",
]  # fmt: skip
POOLED_COLUMNS = [
    "comparison", "k", "estimate", "ci_low", "ci_high", "tau2", "i2", "method", "verdict",
]  # fmt: skip


def comparison_name(a: str, b: str) -> str:
    return f"{a} vs {b}"


def study_effects(study: str, dataset: str, verdicts: pd.DataFrame) -> pd.DataFrame:
    """effects.csv rows of one study, from its verdicts.csv."""
    v = verdicts
    return pd.DataFrame(
        {
            "study": study,
            "dataset": dataset,
            "comparison": [comparison_name(a, b) for a, b in zip(v["a"], v["b"], strict=True)],
            "a": v["a"],
            "b": v["b"],
            "n_seeds": v["n_seeds"],
            "estimate": v["mean_diff"],
            "ci_low": v["ci_low"],
            "ci_high": v["ci_high"],
            "se": v["se"],
            "verdict": v["verdict"],
        },
        columns=EFFECT_COLUMNS,
    )


def pool(estimates: np.ndarray, ses: np.ndarray) -> dict:
    """DerSimonian-Laird random-effects pooling of k estimates with standard errors."""
    estimates, ses = np.asarray(estimates, float), np.asarray(ses, float)
    k = len(estimates)
    if k == 1:  # nothing to pool: the one study, no heterogeneity to estimate
        est, se = float(estimates[0]), float(ses[0])
        return {"k": 1, "estimate": est, "se": se, "tau2": np.nan, "i2": np.nan}
    with np.errstate(divide="ignore", invalid="ignore"):  # tau^2 < 0 or Q = 0: handled below
        res = combine_effects(estimates, ses**2, method_re="dl", use_t=False)
    if res.tau2 <= 0:  # DerSimonian-Laird truncates tau^2 at 0 (statsmodels does not): then
        # the random-effects model is the fixed-effect one
        return {"k": k, "estimate": float(res.mean_effect_fe), "se": float(res.sd_eff_w_fe),
                "tau2": 0.0, "i2": 0.0}  # fmt: skip
    return {
        "k": k,
        "estimate": float(res.mean_effect_re),
        "se": float(res.sd_eff_w_re),
        "tau2": float(res.tau2),
        "i2": float(max(0.0, res.i2)),
    }


def _verdict(a: str, b: str, est: float, se: float, p_adj: float, margin: float) -> str:
    z95, z90 = stats.norm.ppf(1 - ALPHA / 2), stats.norm.ppf(1 - ALPHA)
    if np.isfinite(p_adj) and p_adj < ALPHA:
        if est - z95 * se > 0:
            return f"{a} wins"
        if est + z95 * se < 0:
            return f"{b} wins"
    if -margin < est - z90 * se and est + z90 * se < margin:
        return "equivalent"
    return "inconclusive"


def poolable(effects: pd.DataFrame) -> pd.DataFrame:
    """The effects that can be weighted: a finite, non-zero standard error (not one seed)."""
    ok = effects.dropna(subset=["estimate", "se"])
    return ok[np.isfinite(ok["se"]) & (ok["se"] > 1e-9)]


def pooled_effects(effects: pd.DataFrame, margin: float) -> pd.DataFrame:
    """pooled.csv: one row per comparison present in at least one study."""
    rows = []
    ok = poolable(effects)
    for (comparison, a, b), group in ok.groupby(["comparison", "a", "b"], sort=False):
        p = pool(group["estimate"].to_numpy(), group["se"].to_numpy())
        z = stats.norm.ppf(1 - ALPHA / 2)
        rows.append(
            {
                "comparison": comparison,
                "a": a,
                "b": b,
                "k": p["k"],
                "estimate": p["estimate"],
                "ci_low": p["estimate"] - z * p["se"],
                "ci_high": p["estimate"] + z * p["se"],
                "se": p["se"],
                "tau2": p["tau2"],
                "i2": p["i2"],
                "method": "DerSimonian-Laird" if p["k"] > 1 else "single study",
                "p_value": float(2 * stats.norm.sf(abs(p["estimate"] / p["se"]))),
                "single": group["verdict"].iloc[0] if p["k"] == 1 else None,
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    df["p_adjusted"] = holm(df["p_value"].tolist())
    df["verdict"] = [  # one study: its own verdict (its t-based analysis), not a z re-test
        r.single or _verdict(r.a, r.b, r.estimate, r.se, r.p_adjusted, margin)
        for r in df.itertuples()
    ]
    return df[[*POOLED_COLUMNS, "se", "p_adjusted"]]


def agreement(effects: pd.DataFrame, comparison: str) -> str:
    """Whether the studies' verdicts on a comparison hold, or flip, across datasets."""
    verdicts = effects[effects["comparison"] == comparison]["verdict"]
    wins = {v for v in verdicts if v.endswith(" wins")}
    if len(wins) > 1:
        return "flips: " + " / ".join(sorted(wins))
    if len(set(verdicts)) == 1:
        return f"holds in all {len(verdicts)}"
    counts = verdicts.value_counts()
    return ", ".join(f"{v} in {n}" for v, n in counts.items())


def forest_plot(effects: pd.DataFrame, pooled: pd.Series, margin: float, path: Path) -> Path:
    """Each study's estimate and 95% CI, the pooled diamond, and the +-margin band (pts)."""
    rows = effects.reset_index(drop=True)
    k = len(rows)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * (k + 2)))
    ax.axvspan(-margin * 100, margin * 100, color="0.9", label=f"+-margin ({margin * 100:g} pts)")
    ax.axvline(0, color="0.4", lw=0.8)
    y = np.arange(k, 0, -1) + 1
    ax.errorbar(
        rows["estimate"] * 100,
        y,
        xerr=[
            (rows["estimate"] - rows["ci_low"]) * 100,
            (rows["ci_high"] - rows["estimate"]) * 100,
        ],
        fmt="s",
        color="tab:blue",
        capsize=3,
    )
    lo, est, hi = pooled["ci_low"] * 100, pooled["estimate"] * 100, pooled["ci_high"] * 100
    ax.fill([lo, est, hi, est], [0.6, 0.85, 0.6, 0.35], color="tab:red", label="pooled (DL)")
    ax.set_yticks([*y, 0.6], [*rows["study"], "pooled"])
    ax.set_xlabel(f"{pooled['comparison']}: difference in test accuracy (pts), a - b")
    i2 = "n/a" if pd.isna(pooled["i2"]) else f"{pooled['i2'] * 100:.0f}%"
    ax.set_title(f"{pooled['comparison']}: {pooled['verdict']} (I^2 = {i2})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the atlas report


def collect_effects(entries: list[dict], results: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every reported study's verdicts as effects rows; and why each other study has none."""
    frames, missing = [], {}
    for e in entries:
        path = results / e["study"] / "verdicts.csv"
        if e["reason"]:
            missing[e["name"]] = e["reason"]
        elif not path.exists():
            missing[e["name"]] = f"no results: {path} is missing (run its sweep and report)"
        else:
            frames.append(study_effects(e["study"], e["dataset"], pd.read_csv(path)))
    effects = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EFFECT_COLUMNS)
    )
    return effects, missing


def claims_across(entries: list[dict], results: Path) -> pd.DataFrame:
    """Each claim's verdict per study (columns in atlas order)."""
    table = {}
    for e in entries:
        path = results / e["study"] / "claims.csv"
        if not e["reason"] and path.exists():
            table[e["study"]] = pd.read_csv(path).set_index("claim")["verdict"]
    return pd.DataFrame(table).fillna("-").reset_index(names="claim") if table else pd.DataFrame()


def _headline_table(effects: pd.DataFrame, pooled: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in pooled.itertuples():
        per_study = effects[effects["comparison"] == r.comparison].set_index("study")["verdict"]
        i2 = "n/a" if pd.isna(r.i2) else f"{r.i2 * 100:.0f}%"
        rows.append(
            {
                "comparison": r.comparison,
                **per_study.to_dict(),
                "across datasets": agreement(effects, r.comparison),
                "pooled (pts) [95% CI]": f"{r.estimate * 100:+.2f} [{r.ci_low * 100:+.2f}, "
                f"{r.ci_high * 100:+.2f}]",
                "I^2": i2,
                "tau^2 (pts^2)": "n/a" if pd.isna(r.tau2) else f"{r.tau2 * 1e4:.3g}",
                "pooled verdict": r.verdict,
            }
        )
    return pd.DataFrame(rows).fillna("-")


README_BEGIN = "<!-- atlas-headline: begin (written by `make atlas`; do not edit) -->"
README_END = "<!-- atlas-headline: end -->"


def readme_block(out: Path) -> str:
    """The atlas's headline table and its measured cost, as README's generated block."""
    lines = [(out / "headline.md").read_text().strip()]
    timing = out / "timing.csv"
    if timing.exists():
        t = pd.read_csv(timing)
        cost = ", ".join(f"{r.study} {r.seconds / 60:.1f}" for r in t.itertuples()
                         if r.study != "total")  # fmt: skip
        total = t.loc[t["study"] == "total", "seconds"]
        if len(total):
            lines.append(f"\nMeasured by this `make atlas`: {total.iloc[0] / 60:.1f} min in all "
                         f"(minutes per study, sweep + report: {cost}).")  # fmt: skip
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> bool:
    """Replace what lies between README's atlas markers with ``block``; False if no markers."""
    if not readme.exists():
        return False
    text = readme.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        return False
    head, tail = text[: begin + len(README_BEGIN)], text[end:]
    readme.write_text(f"{head}\n{block}\n{tail}")
    return True


def write_atlas(name: str, margin: float, entries: list[dict], results: Path) -> Path:
    """results/<name>/: effects.csv, pooled.csv, forest plots, headline.md, report.md and
    report.html."""
    from cnnstudy.report.builder import TEMPLATES, headline_markdown, to_html  # noqa: PLC0415

    out = results / name
    (out / "figures").mkdir(parents=True, exist_ok=True)
    effects, missing = collect_effects(entries, results)
    effects = poolable(effects)  # the table, the plots and the pool use the same studies
    pooled = pooled_effects(effects, margin)
    effects.to_csv(out / "effects.csv", index=False, float_format="%.6g")
    pooled[POOLED_COLUMNS].to_csv(out / "pooled.csv", index=False, float_format="%.6g")
    figures = {}
    for r in pooled.itertuples():
        rows = effects[effects["comparison"] == r.comparison]
        slug = r.comparison.replace(" ", "_")
        path = forest_plot(
            rows, pd.Series(r._asdict()), margin, out / "figures" / f"forest_{slug}.png"
        )
        figures[r.comparison] = path.relative_to(out).as_posix()
    studies = []
    for e in entries:
        report = results / e["study"] / "report.md"
        if e["name"] in missing or not report.exists():
            continue
        studies.append({"name": e["study"], "dataset": e["dataset"],
                        "headline": headline_markdown(report.read_text()),
                        "link": f"../{e['study']}/report.html"})  # fmt: skip
    headline = _headline_table(effects, pooled)
    from cnnstudy.report.builder import markdown_table  # noqa: PLC0415

    (out / "headline.md").write_text(markdown_table(headline) + "\n" if len(headline) else "")
    context = {
        "name": name,
        "margin_pts": margin * 100,
        "n_studies": len(studies),
        "headline_table": headline,
        "skipped": missing,
        "figures": figures,
        "studies": studies,
        "claims_table": claims_across(entries, results),
    }
    text = TEMPLATES.get_template("atlas.md.j2").render(context)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(to_html(text, f"cnnstudy atlas: {name}", base=out))
    return out
