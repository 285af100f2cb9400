"""Study files: load, merge over the shared defaults, validate.

A study file is data only (TOML). Every problem becomes a ``StudyError`` that names
the file, the key and the allowed values, raised before anything trains or is logged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from cnnstudy.core import datasets
from cnnstudy.core.variants import PADDINGS, Variant, downsamples, select, unbuildable

STRIDE_MODES: tuple[str, ...] = ("last_conv", "extra_conv")

SECTIONS = ("study", "scientific", "nuisance", "fixed")
TUNABLE = ("learning_rate", "dropout", "weight_decay")
OPTIMIZERS = ("adam", "sgd", "adamw")
SAMPLINGS = ("log", "linear")


class StudyError(ValueError):
    """A study file (or an override of it) that cannot be run, with the fix in the message."""


def load_defaults() -> dict[str, Any]:
    text = resources.files("cnnstudy.core").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


# ---------------------------------------------------------------- the Study object


@dataclass(frozen=True)
class NuisanceSpec:
    """One tuned hyperparameter: a range gridded into ``budget`` points, or a list."""

    name: str
    values: tuple[float, ...]
    low: float | None = None
    high: float | None = None
    sampling: str | None = None


@dataclass(frozen=True)
class Study:
    path: str
    name: str
    dataset: str
    seeds: int
    budget: int
    data_path: str
    limit: int
    paddings: tuple[str, ...]
    downsamplings: tuple[str, ...]
    stride_mode: str
    nuisance: dict[str, NuisanceSpec]
    fixed: dict[str, Any]
    resolved: dict[str, Any] = field(repr=False)

    @property
    def variants(self) -> list[Variant]:
        return select(list(self.paddings), list(self.downsamplings))

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return datasets.REGISTRY[self.dataset].input_shape

    @property
    def n_classes(self) -> int:
        return datasets.REGISTRY[self.dataset].n_classes

    @property
    def fingerprint(self) -> str:
        """Hash of everything that decides the trials: same study, same sweep."""
        blob = json.dumps(self.resolved, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def settings(self, nuisance_values: dict[str, Any]) -> dict[str, Any]:
        """Fixed settings plus one point of the nuisance space: what a trial trains with."""
        return {**self.fixed, "stride_mode": self.stride_mode, **nuisance_values}

    def n_tuning_points(self) -> int:
        return math.prod(len(s.values) for s in self.nuisance.values())

    @property
    def n_trials(self) -> int:
        """Tuning points plus seeds, for every variant: the sweep's size."""
        return len(self.variants) * (self.n_tuning_points() + self.seeds)


# ---------------------------------------------------------------- loading


def resolve_path(study: str | Path) -> Path:
    """A study path, or a bare name looked up as experiments/<name>.toml."""
    path = Path(study)
    if path.exists() or path.suffix == ".toml":
        return path
    return Path("experiments") / f"{study}.toml"


def load_study(study: str | Path, overrides: list[str] | None = None) -> Study:
    """Read a study file, apply ``section.key=value`` overrides, validate, return a Study."""
    path = resolve_path(study)
    if not path.exists():
        raise StudyError(f"{path}: no such study file. Study files live in experiments/*.toml.")
    try:
        user = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise StudyError(f"{path}: not valid TOML ({err}). Fix the syntax and retry.") from None
    for item in overrides or []:
        _apply_override(user, item, path)
    return build_study(user, str(path))


def _apply_override(user: dict[str, Any], item: str, path: Path) -> None:
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise StudyError(f"--set {item!r}: expected section.key=value, e.g. --set study.seeds=1")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as digits or valid
    user.setdefault(section, {})[name] = value


def build_study(user: dict[str, Any], source: str) -> Study:
    defaults = load_defaults()
    _check_keys(user, defaults, source)
    merged = copy.deepcopy(defaults)
    for section in ("study", "scientific", "fixed"):
        merged[section].update(user.get(section, {}))
    merged["nuisance"].update(copy.deepcopy(user.get("nuisance", {})))
    for key in merged["nuisance"]:
        if key in user.get("fixed", {}):
            raise StudyError(
                f"{source}: '{key}' is in both [nuisance] and [fixed]. "
                "A hyperparameter is either tuned or held fixed: remove one."
            )
        merged["fixed"].pop(key, None)

    _check_types(merged, defaults, source)
    s, sci, fixed = merged["study"], merged["scientific"], merged["fixed"]
    _check_study(s, source)
    _check_scientific(sci, source)
    _check_fixed(fixed, source)
    nuisance = _nuisance_specs(merged["nuisance"], s["budget"], source)

    study = Study(
        path=source,
        name=s["name"],
        dataset=s["dataset"],
        seeds=s["seeds"],
        budget=s["budget"],
        data_path=s["data_path"],
        limit=s["limit"],
        paddings=tuple(sci["paddings"]),
        downsamplings=tuple(sci["downsamplings"]),
        stride_mode=sci["stride_mode"],
        nuisance=nuisance,
        fixed=fixed,
        resolved=merged,
    )
    if not study.variants:
        raise StudyError(f"{source}: [scientific] selects no registered variant.")
    for variant in study.variants:
        problem = unbuildable(variant, study.settings({}), study.input_shape)
        if problem:
            raise StudyError(
                f"{source}: {problem}. Use fewer stages ([fixed] stage_widths), a smaller "
                "kernel_size, or drop 'valid' from [scientific] paddings."
            )
    return study


# ---------------------------------------------------------------- checks


def _allowed(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def _check_keys(user: dict[str, Any], defaults: dict[str, Any], source: str) -> None:
    for section, body in user.items():
        if section not in SECTIONS:
            raise StudyError(
                f"{source}: unknown section [{section}]. Allowed sections: {_allowed(SECTIONS)}."
            )
        if not isinstance(body, dict):
            raise StudyError(f"{source}: [{section}] must be a table of key = value lines.")
        allowed = TUNABLE if section == "nuisance" else tuple(defaults[section])
        for key in body:
            if key not in allowed:
                raise StudyError(
                    f"{source}: unknown key '{key}' in [{section}]. "
                    f"Allowed keys: {_allowed(allowed)}."
                )


def _check_types(merged: dict[str, Any], defaults: dict[str, Any], source: str) -> None:
    for section in ("study", "scientific", "fixed"):
        for key, default in defaults[section].items():
            if key not in merged[section]:
                continue
            value = merged[section][key]
            ok = isinstance(value, type(default))
            if (
                isinstance(default, float)
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                merged[section][key] = float(value)
                ok = True
            if isinstance(default, int) and isinstance(value, bool):
                ok = False
            if not ok:
                raise StudyError(
                    f"{source}: [{section}] {key} = {value!r} must be a "
                    f"{type(default).__name__} (default: {default!r})."
                )


def _require(cond: bool, source: str, where: str, what: str) -> None:
    if not cond:
        raise StudyError(f"{source}: {where} {what}")


def _check_study(s: dict[str, Any], source: str) -> None:
    _require(
        s["dataset"] in datasets.REGISTRY,
        source,
        f"[study] dataset = {s['dataset']!r}:",
        f"unknown dataset. Allowed values: {_allowed(datasets.REGISTRY)}.",
    )
    _require(s["seeds"] >= 1, source, f"[study] seeds = {s['seeds']}:", "must be at least 1.")
    _require(s["budget"] >= 1, source, f"[study] budget = {s['budget']}:", "must be at least 1.")
    _require(s["limit"] >= 0, source, f"[study] limit = {s['limit']}:", "must be 0 (all) or more.")
    _require(
        bool(s["name"]) and s["name"].replace("-", "").replace("_", "").isalnum(),
        source,
        f"[study] name = {s['name']!r}:",
        "use letters, digits, '-' and '_' only (it names a folder and an MLflow experiment).",
    )


def _check_choice_list(value: list, allowed: tuple[str, ...], source: str, key: str) -> None:
    _require(
        bool(value), source, f"[scientific] {key}:", f"is empty. Allowed: {_allowed(allowed)}."
    )
    for item in value:
        _require(
            item in allowed,
            source,
            f"[scientific] {key} = {value!r}:",
            f"unknown value {item!r}. Allowed values: {_allowed(allowed)}.",
        )


def _check_scientific(sci: dict[str, Any], source: str) -> None:
    _check_choice_list(sci["paddings"], PADDINGS, source, "paddings")
    _check_choice_list(sci["downsamplings"], downsamples(), source, "downsamplings")
    _require(
        sci["stride_mode"] in STRIDE_MODES,
        source,
        f"[scientific] stride_mode = {sci['stride_mode']!r}:",
        f"unknown value. Allowed values: {_allowed(STRIDE_MODES)}.",
    )


POSITIVE_INTS = ("epochs", "batch_size", "conv_per_stage", "kernel_size")


def _check_fixed(f: dict[str, Any], source: str) -> None:
    for key in POSITIVE_INTS:
        _require(f[key] >= 1, source, f"[fixed] {key} = {f[key]}:", "must be at least 1.")
    _require(
        f["optimizer"] in OPTIMIZERS,
        source,
        f"[fixed] optimizer = {f['optimizer']!r}:",
        f"unknown value. Allowed values: {_allowed(OPTIMIZERS)}.",
    )
    for key in ("stage_widths", "dense_units"):
        ok = all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in f[key])
        _require(ok, source, f"[fixed] {key} = {f[key]!r}:", "must be a list of positive integers.")
    _require(bool(f["stage_widths"]), source, "[fixed] stage_widths:", "needs at least one stage.")
    for key in ("val_fraction", "test_fraction"):
        _require(0 < f[key] < 1, source, f"[fixed] {key} = {f[key]}:", "must be between 0 and 1.")
    _require(
        f["val_fraction"] + f["test_fraction"] < 0.9,
        source,
        "[fixed] val_fraction + test_fraction:",
        "must leave at least 10% of the data for training.",
    )
    if "dropout" in f:
        _require(
            0 <= f["dropout"] < 1,
            source,
            f"[fixed] dropout = {f['dropout']}:",
            "must be in [0, 1).",
        )
    for key in ("augment_shift", "probe_shift"):
        _require(f[key] >= 0, source, f"[fixed] {key} = {f[key]}:", "must be 0 or more pixels.")


def _nuisance_specs(nuisance: dict[str, Any], budget: int, source: str) -> dict[str, NuisanceSpec]:
    if "learning_rate" not in nuisance:
        raise StudyError(
            f"{source}: [nuisance] must tune learning_rate: the comparison is only fair if "
            "each variant gets its own best learning rate."
        )
    specs = {}
    for key, value in nuisance.items():
        where = f"[nuisance] {key} = {value!r}:"
        if isinstance(value, list):
            ok = bool(value) and all(isinstance(v, (int, float)) for v in value)
            _require(ok, source, where, "a list must hold one or more numbers.")
            specs[key] = NuisanceSpec(key, tuple(float(v) for v in value))
            continue
        _require(isinstance(value, dict), source, where, "use {min, max, sampling} or a list.")
        extra = set(value) - {"min", "max", "sampling"}
        _require(
            not extra,
            source,
            where,
            f"unknown field(s) {sorted(extra)}; allowed: min, max, sampling.",
        )
        _require({"min", "max"} <= set(value), source, where, "a range needs both min and max.")
        low, high = float(value["min"]), float(value["max"])
        sampling = value.get("sampling", "log")
        _require(
            sampling in SAMPLINGS, source, where, f"sampling must be one of {_allowed(SAMPLINGS)}."
        )
        _require(
            low < high,
            source,
            where,
            f"the range is upside down or empty (min {low:g} >= max {high:g}); swap min and max.",
        )
        if sampling == "log":
            _require(low > 0, source, where, "a log range needs min > 0.")
        specs[key] = NuisanceSpec(key, _grid(low, high, sampling, budget), low, high, sampling)
    return specs


def _grid(low: float, high: float, sampling: str, points: int) -> tuple[float, ...]:
    if points == 1:
        middle = math.sqrt(low * high) if sampling == "log" else (low + high) / 2
        return (float(f"{middle:.4g}"),)
    if sampling == "log":
        ratio = (high / low) ** (1 / (points - 1))
        values = [low * ratio**i for i in range(points)]
    else:
        values = [low + (high - low) * i / (points - 1) for i in range(points)]
    return tuple(float(f"{v:.4g}") for v in values)
