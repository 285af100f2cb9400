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

    for p in atlas.planned:
        if p.reason:
            print(f"atlas: {p.name}: {p.reason}", flush=True)
    studies = atlas.runnable
    total = sum(s.n_trials for s in studies)
    done, started, cost = 0, time.perf_counter(), []
    for i, study in enumerate(studies, start=1):
        begun = time.perf_counter()
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
        cost.append((study.name, study.n_trials, time.perf_counter() - begun))
    out = write_atlas(atlas.name, atlas.margin, entries(atlas), results)
    seconds = time.perf_counter() - started
    write_timing(out / "timing.csv", [*cost, ("total", done, seconds)])
    if readme is not None and update_readme(readme, readme_block(out)):
        print(f"atlas: {readme}'s headline table updated")
    print(f"\natlas done in {_clock(seconds)}: {out}/report.html")
    return 0


def write_timing(path: Path, rows: list[tuple[str, int, float]]) -> None:
    """Each study's wall time in this run (sweep + report; a resumed study counts only what
    it still had to do), and the whole atlas's."""
    lines = ["study,trials,seconds", *(f"{s},{n},{t:.1f}" for s, n, t in rows)]
    path.write_text("\n".join(lines) + "\n")


def entries(atlas: Atlas) -> list[dict]:
    """What the report needs of each listed study: names, dataset, why skipped."""
    return [
        {"name": p.name, "study": p.study.name, "dataset": p.study.dataset, "reason": p.reason}
        for p in atlas.planned
        if p.study is not None
    ]
