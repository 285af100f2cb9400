"""``cnnstudy atlas``: sweep and report every study an atlas file lists, then pool them.

An atlas file (``experiments/atlas.toml``) names studies (``experiments/<name>.toml``). A
study whose dataset needs a download runs only when its files are already in the Keras cache
or its ``data_path`` is set; otherwise it is skipped with one line saying how to include it.
Each study resumes where an interrupted atlas left it (a finished sweep is not re-run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

from cnnstudy.core import datasets
from cnnstudy.core.study import Study, StudyError, load_study, resolve_path
from cnnstudy.nets.data import keras_cache_dir
from cnnstudy.run.launch import launch
from cnnstudy.run.lifecycle import RESULTS

ATLAS_KEYS = {"name", "margin", "studies"}


@dataclass
class Planned:
    name: str
    study: Study | None
    reason: str = ""  # why it is skipped ("" = it runs)


@dataclass
class Atlas:
    path: str
    name: str
    margin: float
    planned: list[Planned]

    @property
    def runnable(self) -> list[Study]:
        return [p.study for p in self.planned if p.study is not None and not p.reason]


def unavailable(study: Study) -> str:
    """Why the study's data is not here ('' when it is): offline, data_path, or cached."""
    info = datasets.REGISTRY[study.dataset]
    if info.offline or study.data_path:
        return ""
    cache = keras_cache_dir()
    if any((cache / c).exists() for c in info.cache_names):
        return ""
    return (
        f"skipped: {study.dataset} is not in the Keras cache ({cache}). To include it, run "
        f"`make sweep EXP={study.path}` once with network access, or set [study] data_path "
        f"to a local copy of {info.origin}."
    )


def load_atlas(path: str | Path) -> Atlas:
    path = Path(path)
    if not path.exists():
        raise StudyError(f"{path}: no such atlas file (see experiments/atlas.toml).")
    try:
        body = tomllib.loads(path.read_text()).get("atlas")
    except tomllib.TOMLDecodeError as err:
        raise StudyError(f"{path}: not valid TOML ({err}). Fix the syntax and retry.") from None
    if not isinstance(body, dict) or not isinstance(body.get("studies"), list):
        raise StudyError(f'{path}: needs an [atlas] table with studies = ["default", ...].')
    if extra := set(body) - ATLAS_KEYS:
        raise StudyError(f"{path}: [atlas] has unknown keys {sorted(extra)}; allowed: "
                         f"{sorted(ATLAS_KEYS)}.")  # fmt: skip
    planned = []
    for name in body["studies"]:
        if not resolve_path(name).exists():
            raise StudyError(f"{path}: study {name!r} has no file {resolve_path(name)}.")
        study = load_study(name)  # every study checked before anything trains
        planned.append(Planned(name, study, unavailable(study)))
    return Atlas(str(path), body.get("name", "atlas"), float(body.get("margin", 0.005)), planned)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def run_atlas(atlas: Atlas, results: Path = RESULTS, readme: Path | None = None) -> int:
    """Sweep and report each runnable study (resuming), then write results/<atlas>/; with
    ``readme``, also its generated headline block."""
    from cnnstudy.report.atlas import readme_block, update_readme, write_atlas  # noqa: PLC0415
    from cnnstudy.report.builder import make_report  # noqa: PLC0415
    from cnnstudy.tracking import find_sweep  # noqa: PLC0415

    previous = read_timing(results / atlas.name / "timing.csv")
    for p in atlas.planned:
        if p.reason:
            print(f"atlas: {p.name}: {p.reason}", flush=True)
    studies = atlas.runnable
    total = sum(s.n_trials for s in studies)
    done, started, cost = 0, time.perf_counter(), []
    for i, study in enumerate(studies, start=1):
        begun, before = time.perf_counter(), trials_logged(study.name)
        elapsed = time.perf_counter() - started
        eta = "?" if not done else _clock(elapsed / done * (total - done))
        print(
            f"\natlas: study {i}/{len(studies)} {study.name} ({study.n_trials} trials) ... "
            f"elapsed {_clock(elapsed)}, eta {eta}",
            flush=True,
        )
        rc = launch(study, argv=[study.path])
        if rc:
            print(f"atlas: {study.name} stopped (exit {rc}); run `make atlas` again to resume.")
            return rc
        make_report(find_sweep(study.name), results)
        done += study.n_trials
        trained = trials_logged(study.name) - before
        if trained or study.name not in previous:  # a complete sweep keeps its measured cost
            previous[study.name] = (trained, time.perf_counter() - begun)
        cost.append((study.name, *previous[study.name]))
    begun = time.perf_counter()
    out = write_atlas(atlas.name, atlas.margin, entries(atlas), results)
    seconds = sum(c[2] for c in cost) + time.perf_counter() - begun
    write_timing(out / "timing.csv", [*cost, ("total", sum(c[1] for c in cost), seconds)])
    if readme is not None and update_readme(readme, readme_block(out)):
        print(f"atlas: {readme}'s headline table updated")
    print(f"\natlas done in {_clock(seconds)}: {out}/report.html")
    return 0


def trials_logged(study_name: str) -> int:
    """Trial runs (both stages, any status) in the study's latest sweep; 0 if none yet."""
    from cnnstudy.tracking import find_sweep, trial_runs  # noqa: PLC0415

    try:
        return len(trial_runs(find_sweep(study_name), stage=None))
    except LookupError:
        return 0


def read_timing(path: Path) -> dict[str, tuple[int, float]]:
    if not path.exists():
        return {}
    import pandas as pd

    df = pd.read_csv(path, dtype={"study": str})
    df = df[df["study"] != "total"]
    return {
        s: (int(n), float(t)) for s, n, t in df[["study", "trials", "seconds"]].itertuples(False)
    }


def write_timing(path: Path, rows: list[tuple[str, int, float]]) -> None:
    """Each study's wall time (sweep + report) and trials trained, from the run that trained
    it: a re-run that finds a study's sweep complete keeps its earlier row. ``total`` adds them
    up, with the atlas report's own time."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=["study", "trials", "seconds"])
    df.to_csv(path, index=False, float_format="%.1f")


def entries(atlas: Atlas) -> list[dict]:
    """What the report needs of each listed study: names, dataset, why skipped."""
    return [
        {"name": p.name, "study": p.study.name, "dataset": p.study.dataset, "reason": p.reason}
        for p in atlas.planned
        if p.study is not None
    ]
