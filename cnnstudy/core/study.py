"""Study files: load, validate with pydantic over the shared defaults, build a ``Study``.

A study file is data only (TOML). ``StudyFile`` is its pydantic model: one model per
section, every key optional, defaults and descriptions read from ``defaults.toml`` (the
single source of default values and of why they are what they are). Validation reports
every problem of a file at once: each becomes one line naming the file, the
``[section] key`` and the allowed values, all raised as one ``StudyError`` before
anything trains or is logged. ``study_schema()`` is the same model as a JSON schema.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticUndefined, core_schema

from cnnstudy.core import datasets
from cnnstudy.core.matching import MODES as MATCH_MODES
from cnnstudy.core.matching import TOLERANCE, matched_widths
from cnnstudy.core.variants import PADDINGS, Variant, downsamples, select, unbuildable

SECTIONS = ("study", "scientific", "nuisance", "fixed")
OPTIMIZERS = ("adam", "sgd", "adamw")
SAMPLINGS = ("log", "linear")
SCHEDULES = ("constant", "cosine")
HEADS = ("gap", "flatten")
INITS = ("he_normal", "glorot_uniform")
PRECISIONS = ("float32", "mixed_bfloat16")
REMOVED = {
    ("scientific", "stride_mode"): "stride_mode was removed: each stride flavour is now a "
    "downsampling level of its own. Use [scientific] downsamplings with 'stride' (the "
    "stage's last conv gets stride 2, was last_conv) and/or 'allconv' (an extra stride-2 "
    "conv in place of the pool, was extra_conv); 'convpool' and 'blurpool' are there too.",
}


class StudyError(ValueError):
    """A study file (or an override of it) that cannot be run, with the fix in the message."""


def _defaults_text() -> str:
    return resources.files("cnnstudy.core").joinpath("defaults.toml").read_text()


def load_defaults() -> dict[str, Any]:
    return tomllib.loads(_defaults_text())


def _comment(line: str) -> tuple[str, str]:
    """Split a TOML line into its code and its trailing comment ('#' outside strings)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:i].strip(), line[i + 1 :].strip()
    return line.strip(), ""


def _key_docs(text: str) -> dict[str, dict[str, str]]:
    """``{section: {key: description}}`` from the comments of defaults.toml: the comment
    block right above a key, its trailing comment and the indented comment lines under it."""
    docs: dict[str, dict[str, str]] = {}
    section, block, last = "", [], ""
    for line in text.splitlines():
        code, comment = _comment(line)
        if code.startswith("["):
            section, block, last = code.strip("[]").strip(), [], ""
            docs[section] = {}
        elif not code and comment:
            if line[:1].isspace() and last:  # continues the comment of the key above
                docs[section][last] += " " + comment
            else:
                block.append(comment)
        elif not code:
            block, last = [], ""
        elif section and "=" in code:
            last = code.partition("=")[0].strip()
            docs[section][last] = " ".join([*block, comment]).strip()
            block = []
    return docs


DEFAULTS = load_defaults()
DOCS = _key_docs(_defaults_text())


def _field(section: str, key: str, default: Any = PydanticUndefined, **constraints: Any) -> Any:
    """A field whose default and description come from defaults.toml (``default`` only
    where the file has none)."""
    return Field(
        DEFAULTS.get(section, {}).get(key, default),
        description=DOCS.get(section, {}).get(key) or None,
        **constraints,
    )


def _allowed(values: Any) -> str:
    return ", ".join(str(v) for v in values)


# ---------------------------------------------------------------- the models


Rule = tuple[tuple[str, ...], str]  # (where, relative to the model; what is wrong)


class _Model(BaseModel):
    """Strict (no str -> int coercion; an int is fine where a float is expected), no
    unknown keys, defaults validated too. Cross-field rules live in ``_rules``: a
    wrap model validator runs them even when other fields fail, so that a file's
    problems all show at once."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    @classmethod
    def _rules(cls, data: dict[str, Any], failed: set[str]) -> list[Rule]:
        """Problems across fields of the raw input, judged only on fields not in ``failed``."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _check_rules(cls, data: Any, handler: Any) -> Any:
        try:
            model = handler(data)
        except ValidationError as err:
            failed = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
            broken = cls._broken(data, failed)
            if not broken:
                raise
            raise ValidationError.from_exception_data(
                cls.__name__, [*_reraisable(err), *broken]
            ) from None
        broken = cls._broken(data, set())
        if broken:
            raise ValidationError.from_exception_data(cls.__name__, broken)
        return model

    @classmethod
    def _broken(cls, data: Any, failed: set[str]) -> list[InitErrorDetails]:
        if not isinstance(data, dict):
            return []
        return [
            InitErrorDetails(
                type=PydanticCustomError("study_rule", "{message}", {"message": message}),
                loc=where,
                input=data,
            )
            for where, message in cls._rules(data, failed)
        ]


_KNOWN_ERRORS = set(core_schema.ErrorType.__args__)  # type: ignore[attr-defined]


def _reraisable(err: ValidationError) -> list[InitErrorDetails]:
    """``err``'s errors, in the form ``ValidationError.from_exception_data`` takes."""
    out = []
    for e in err.errors():
        ctx = e.get("ctx")
        kind = e["type"]
        error: InitErrorDetails = {
            "type": kind if kind in _KNOWN_ERRORS else PydanticCustomError(kind, e["msg"], ctx),
            "loc": e["loc"],
            "input": e["input"],
        }
        if ctx and kind in _KNOWN_ERRORS:
            error["ctx"] = ctx
        out.append(error)
    return out


def _value(data: dict[str, Any], key: str, cls: type[BaseModel], failed: set[str]) -> Any:
    """A field's raw value (or its default) if it validated, else None."""
    if key in failed:
        return None
    return data.get(key, cls.model_fields[key].default)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


Dataset = Literal[tuple(datasets.REGISTRY)]  # type: ignore[valid-type]
Padding = Literal[PADDINGS]  # type: ignore[valid-type]


def _registered_level(name: str) -> str:
    if name not in downsamples():
        raise PydanticCustomError(
            "unknown_choice",
            "unknown value {value}",
            {"value": repr(name), "allowed": _allowed(downsamples())},
        )
    return name


def _level_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = list(downsamples())  # the registry as it is when the schema is made


Level = Annotated[str, AfterValidator(_registered_level), Field(json_schema_extra=_level_enum)]
Width = Annotated[int, Field(ge=1)]


class StudySection(_Model):
    """[study]: what the study is called, its dataset and its size."""

    name: str = _field("study", "name", pattern=r"^[A-Za-z0-9_-]+$")
    dataset: Dataset = _field("study", "dataset")
    seeds: int = _field("study", "seeds", ge=1)
    budget: int = _field("study", "budget", ge=1)
    data_path: str = _field("study", "data_path")
    limit: int = _field("study", "limit", ge=0)
    tune_seeds: int = _field("study", "tune_seeds", ge=2)
    tune_epochs: int = _field("study", "tune_epochs", ge=0)
    margin: float = _field("study", "margin", gt=0, lt=1)
    match: Literal[MATCH_MODES] = _field("study", "match")  # type: ignore[valid-type]


class ScientificSection(_Model):
    """[scientific]: the factors under study; every (padding, downsampling) pair is a variant."""

    paddings: list[Padding] = _field("scientific", "paddings", min_length=1)
    downsamplings: list[Level] = _field("scientific", "downsamplings", min_length=1)


class Range(_Model):
    """A tuned range, gridded into [study] budget points."""

    min: float = Field(description="lowest value of the grid")
    max: float = Field(description="highest value of the grid")
    sampling: Literal[SAMPLINGS] = Field(  # type: ignore[valid-type]
        "log", description="log: geometric grid (needs min > 0); linear: evenly spaced"
    )

    @classmethod
    def _rules(cls, data: dict[str, Any], failed: set[str]) -> list[Rule]:
        low, high = _value(data, "min", cls, failed), _value(data, "max", cls, failed)
        if not (_number(low) and _number(high)):
            return []
        if low >= high:
            return [
                (
                    (),
                    f"the range is upside down or empty (min {low:g} >= max {high:g}); "
                    "swap min and max.",
                )
            ]
        if _value(data, "sampling", cls, failed) == "log" and low <= 0:
            return [((), 'a log range needs min > 0; raise min or use sampling = "linear".')]
        return []


def _spec_kind(value: Any) -> str | None:
    if isinstance(value, (dict, Range)):
        return "range"
    return "list" if isinstance(value, list) else None


Spec = Annotated[
    Annotated[Range, Tag("range")] | Annotated[list[float], Field(min_length=1), Tag("list")],
    Discriminator(
        _spec_kind,
        custom_error_type="nuisance_spec",
        custom_error_message='use a range {min = ..., max = ..., sampling = "log"} or a list '
        "of numbers",
    ),
]


def _not_null(schema: dict[str, Any]) -> None:
    """TOML has no null: in the schema an untuned key is left out, never null."""
    options = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    if schema.get("default", 0) is None:
        del schema["default"]


class NuisanceSection(_Model):
    """[nuisance]: hyperparameters tuned for each variant on the validation split, as a
    range {min, max, sampling} gridded into [study] budget points or a list of values.
    A key here must not also be in [fixed]."""

    learning_rate: Spec | None = _field(
        "nuisance", "learning_rate", None, json_schema_extra=_not_null
    )
    dropout: Spec | None = Field(
        None,
        description="tune dropout (then leave it out of [fixed])",
        json_schema_extra=_not_null,
    )
    weight_decay: Spec | None = Field(
        None,
        description="tune weight decay (then leave it out of [fixed])",
        json_schema_extra=_not_null,
    )

    @classmethod
    def _rules(cls, data: dict[str, Any], failed: set[str]) -> list[Rule]:
        if "learning_rate" in failed or _value(data, "learning_rate", cls, failed) is not None:
            return []
        return [
            (
                ("learning_rate",),
                "must be tuned (a range or a list): the comparison is only fair if each "
                "variant gets its own best learning rate.",
            )
        ]


class FixedSection(_Model):
    """[fixed]: settings every variant trains with, the same for all."""

    epochs: int = _field("fixed", "epochs", ge=1)
    batch_size: int = _field("fixed", "batch_size", ge=1)
    optimizer: Literal[OPTIMIZERS] = _field("fixed", "optimizer")  # type: ignore[valid-type]
    schedule: Literal[SCHEDULES] = _field("fixed", "schedule")  # type: ignore[valid-type]
    warmup_epochs: int = _field("fixed", "warmup_epochs", ge=0)
    head: Literal[HEADS] = _field("fixed", "head")  # type: ignore[valid-type]
    init: Literal[INITS] = _field("fixed", "init")  # type: ignore[valid-type]
    precision: Literal[PRECISIONS] = _field("fixed", "precision")  # type: ignore[valid-type]
    conv_per_stage: int = _field("fixed", "conv_per_stage", ge=1)
    stage_widths: list[Width] = _field("fixed", "stage_widths", min_length=1)
    kernel_size: int = _field("fixed", "kernel_size", ge=1)
    dense_units: list[Width] = _field("fixed", "dense_units")
    dropout: float = _field("fixed", "dropout", ge=0, lt=1)
    weight_decay: float = _field("fixed", "weight_decay", ge=0)
    augment_shift: int = _field("fixed", "augment_shift", ge=0)
    pad_input: int = _field("fixed", "pad_input", ge=0)
    val_fraction: float = _field("fixed", "val_fraction", gt=0, lt=1)
    test_fraction: float = _field("fixed", "test_fraction", gt=0, lt=1)
    split_seed: int = _field("fixed", "split_seed", ge=0)
    tune_seed: int = _field("fixed", "tune_seed", ge=0)
    probe_shift: int = _field("fixed", "probe_shift", ge=0)
    probe_seed: int = _field("fixed", "probe_seed", ge=0)
    timing_repeats: int = _field("fixed", "timing_repeats", ge=0)

    @classmethod
    def _rules(cls, data: dict[str, Any], failed: set[str]) -> list[Rule]:
        rules: list[Rule] = []
        warm = _value(data, "warmup_epochs", cls, failed)
        epochs = _value(data, "epochs", cls, failed)
        if _number(warm) and _number(epochs) and warm >= epochs:
            rules.append(
                (
                    ("warmup_epochs",),
                    f"{warm} warm-up epochs leave none of the {epochs} epochs to train at the "
                    "study's learning rate: set warmup_epochs below epochs (1 is usual).",
                )
            )
        val = _value(data, "val_fraction", cls, failed)
        test = _value(data, "test_fraction", cls, failed)
        if _number(val) and _number(test) and val + test >= 0.9:
            rules.append(
                (
                    ("val_fraction + test_fraction",),
                    f"{val:g} + {test:g} = {val + test:g}: must be below 0.9, to leave at least "
                    "10% of the data for training.",
                )
            )
        return rules


class StudyFile(_Model):
    """A cnnstudy study file (experiments/*.toml). Every key is optional: what a file
    leaves out comes from cnnstudy/core/defaults.toml, the defaults shown here."""

    model_config = ConfigDict(
        title="cnnstudy study file",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    study: StudySection = Field(default_factory=StudySection)
    scientific: ScientificSection = Field(default_factory=ScientificSection)
    nuisance: NuisanceSection = Field(default_factory=NuisanceSection)
    fixed: FixedSection = Field(default_factory=FixedSection)

    @classmethod
    def _rules(cls, data: dict[str, Any], failed: set[str]) -> list[Rule]:
        tuned, fixed, study = (data.get(k) for k in ("nuisance", "fixed", "study"))
        fixed = fixed if isinstance(fixed, dict) else {}
        rules: list[Rule] = [
            (
                ("fixed", key),
                f"'{key}' is in both [nuisance] and [fixed]. A hyperparameter is either "
                f"tuned or held fixed: remove it from one of them.",
            )
            for key in (tuned if isinstance(tuned, dict) else {})
            if key in fixed
        ]
        study = study if isinstance(study, dict) else {}
        tune = study.get("tune_epochs", StudySection.model_fields["tune_epochs"].default)
        warm = fixed.get("warmup_epochs", FixedSection.model_fields["warmup_epochs"].default)
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (tune, warm))
        if whole and 0 < tune <= warm:  # a non-integer fails its own field's check
            rules.append(
                (
                    ("study", "tune_epochs"),
                    f"tuning trials of {tune} epochs would spend them all warming up "
                    f"([fixed] warmup_epochs = {warm}): set tune_epochs above warmup_epochs, "
                    "or 0 to tune at the study's epochs.",
                )
            )
        return rules


SECTION_MODELS: dict[str, type[_Model]] = {
    "study": StudySection,
    "scientific": ScientificSection,
    "nuisance": NuisanceSection,
    "fixed": FixedSection,
}


def study_schema() -> dict[str, Any]:
    """The JSON schema of a study file, for editors (``cnnstudy schema``)."""
    return StudyFile.model_json_schema()


# ---------------------------------------------------------------- errors as lines


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _lookup(user: dict[str, Any], section: str, key: str) -> tuple[bool, Any]:
    body = user.get(section)
    if isinstance(body, dict) and key in body:
        return True, body[key]
    return False, None


def _bounds(info: FieldInfo) -> str:
    """'must be at least 1', 'must be in (0, 1)', ... from a field's constraints."""
    b = {a: getattr(m, a) for m in info.metadata for a in ("ge", "gt", "le", "lt") if hasattr(m, a)}
    low = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    high = ("]", b["le"]) if "le" in b else (")", b["lt"]) if "lt" in b else None
    if low and high:
        return f"must be in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"must be {'at least' if low[0] == '[' else 'more than'} {low[1]}"
    if high:
        return f"must be {'at most' if high[0] == ']' else 'less than'} {high[1]}"
    return "is out of range"


_WORDS = {"int": "a whole number", "float": "a number", "str": "text in quotes", "list": "a list"}
_ITEM_TYPES = {
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "text in quotes",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than": "more than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
}


def _choices(e: dict[str, Any]) -> list[str] | None:
    ctx = e.get("ctx") or {}
    if e["type"] == "literal_error":
        return re.findall(r"'([^']*)'", ctx.get("expected", ""))
    if e["type"] == "unknown_choice":
        return ctx["allowed"].split(", ")
    return None


def _explain(e: dict[str, Any], user: dict[str, Any]) -> str:
    """One pydantic error as '[section] key = value: what is wrong and the fix'."""
    loc = list(e["loc"])
    if len(loc) > 2 and loc[0] == "nuisance" and loc[2] in ("range", "list"):
        del loc[2]  # the union's tag, not a key of the file
    section = str(loc[0]) if loc else ""
    key = str(loc[1]) if len(loc) > 1 else ""
    rest = loc[2:]
    kind, ctx, value = e["type"], e.get("ctx") or {}, e["input"]
    model = SECTION_MODELS.get(section)
    info = model.model_fields.get(key) if model else None
    default = DEFAULTS.get(section, {}).get(key, info.default if info else None)

    if not section:
        return str(ctx.get("message", e["msg"]))
    if not key:
        if kind == "extra_forbidden":
            return f"unknown section [{section}]. Allowed sections: {_allowed(SECTIONS)}."
        if kind in ("model_type", "dict_type"):
            return f"[{section}] must be a table of key = value lines, not {_show(value)}."
        return f"[{section}]: {ctx.get('message', e['msg'])}"

    found, raw = _lookup(user, section, key)
    where = f"[{section}] {key}" + (f" = {_show(raw)}" if found else "")
    item = ""
    if rest:
        item = f"item {rest[0]} ({_show(value)}) " if isinstance(rest[0], int) else f"{rest[0]} "

    if kind == "study_rule":
        why = ctx["message"]
    elif kind == "extra_forbidden" and (section, key) in REMOVED:
        why = REMOVED[(section, key)]
    elif kind == "extra_forbidden":
        name = str(rest[-1]) if rest else key
        allowed = list(Range.model_fields) if rest else list(model.model_fields) if model else []
        guess = difflib.get_close_matches(name, allowed, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else "."
        if section == "fixed" and key in NuisanceSection.model_fields:
            hint = f"; {key} is tuned, not fixed: give it a range in [nuisance]."
        why = f"unknown key '{name}'{hint} Allowed keys: {_allowed(allowed)}."
    elif kind == "missing":
        name = rest[-1] if rest else key
        why = (
            f"a range needs both min and max ({name} is missing)."
            if section == "nuisance"
            else "missing, and defaults.toml has no default for it: set it."
        )
    elif _choices(e) is not None:
        name = str(rest[-1]) if rest and isinstance(rest[-1], str) else key
        noun = name[:-1] if name.endswith("s") else name  # paddings: 'unknown padding'
        why = f"unknown {noun} {_show(value)}. Allowed values: {_allowed(_choices(e))}."
    elif kind in _BOUNDS:
        if rest or info is None:
            why = f"{item}must be {_BOUNDS[kind].format(**ctx)}."
        else:
            why = f"{_bounds(info)} (default: {default!r})."
    elif kind == "too_short":
        if section == "nuisance":
            why = "a list must hold one or more numbers."
        elif key == "stage_widths":
            why = "needs at least one stage, e.g. [16, 32]."
        else:
            allowed = PADDINGS if key == "paddings" else downsamples()
            why = f"is empty. Allowed values: {_allowed(allowed)}."
    elif kind == "string_pattern_mismatch":
        why = "use letters, digits, '-' and '_' only (it names a folder and an MLflow experiment)."
    elif kind in _ITEM_TYPES and not rest and default is not None:
        name = type(default).__name__
        why = f"must be a {name} ({_WORDS.get(name, name)}, e.g. the default {default!r})."
    elif kind in _ITEM_TYPES:
        why = f"{item}must be {_ITEM_TYPES[kind]}."
    else:
        why = f"{item}{e['msg']}."
    return f"{where}: {why}"


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
    nuisance: dict[str, NuisanceSpec]
    fixed: dict[str, Any]
    resolved: dict[str, Any] = field(repr=False)
    tune_seeds: int = 2
    tune_epochs: int = 0  # epochs of a tuning trial; 0 = [fixed] epochs
    margin: float = 0.005
    match: str = "none"
    widths: dict[str, list[int]] = field(default_factory=dict)  # per variant, after matching

    @property
    def variants(self) -> list[Variant]:
        return select(list(self.paddings), list(self.downsamplings))

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The network's input: the dataset's images with ``pad_input`` px of zeros around."""
        h, w, c = datasets.REGISTRY[self.dataset].input_shape
        pad = 2 * int(self.fixed.get("pad_input", 0))
        return (h + pad, w + pad, c)

    @property
    def n_classes(self) -> int:
        return datasets.REGISTRY[self.dataset].n_classes

    @property
    def fingerprint(self) -> str:
        """Hash of everything that decides the trials: same study, same sweep."""
        blob = json.dumps(self.resolved, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def settings(
        self, nuisance_values: dict[str, Any], variant: Variant | None = None
    ) -> dict[str, Any]:
        """Fixed settings plus one point of the nuisance space: what a trial trains with.
        With [study] match, a variant's stage widths are its matched ones."""
        out = {**self.fixed, **nuisance_values}
        if variant is not None and variant.name in self.widths:
            out["stage_widths"] = list(self.widths[variant.name])
        return out

    @property
    def tune_seed_list(self) -> list[int]:
        """The tuning seeds: tune_seed, tune_seed + 1, ... (never a replicate seed)."""
        base = self.fixed["tune_seed"]
        return list(range(base, base + self.tune_seeds))

    def n_tuning_points(self) -> int:
        return math.prod(len(s.values) for s in self.nuisance.values())

    @property
    def n_trials(self) -> int:
        """Tuning points x tuning seeds, plus seeds, for every variant: the sweep's size."""
        return len(self.variants) * (self.n_tuning_points() * self.tune_seeds + self.seeds)

    def trial_epochs(self, tuning: bool) -> int:
        """Epochs of one replicate, or of one tuning trial: ``tune_epochs`` (0 = as a
        replicate), never more than a replicate's (``--set fixed.epochs=2`` shortens both)."""
        epochs = int(self.fixed["epochs"])
        return min(self.tune_epochs, epochs) if tuning and self.tune_epochs else epochs

    @property
    def n_epochs(self) -> int:
        """Epochs over all trials: the sweep's work, for its ETA."""
        tune = self.n_tuning_points() * self.tune_seeds * self.trial_epochs(tuning=True)
        return len(self.variants) * (tune + self.seeds * self.trial_epochs(tuning=False))


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
    body = user.setdefault(section, {})
    if not isinstance(body, dict):
        raise StudyError(f"{path}: [{section}] must be a table of key = value lines.")
    body[name] = value


def validate(user: dict[str, Any], source: str) -> StudyFile:
    """The user's file over the defaults, validated; every problem in one StudyError."""
    try:
        return StudyFile.model_validate(user)
    except ValidationError as err:
        lines = [f"{source}: {_explain(e, user)}" for e in err.errors()]
        raise StudyError("\n".join(dict.fromkeys(lines))) from None


def build_study(user: dict[str, Any], source: str) -> Study:
    model = validate(user, source)
    tuned = model.nuisance.model_dump(exclude_none=True)
    resolved = {
        "study": model.study.model_dump(),
        "scientific": model.scientific.model_dump(),
        "nuisance": tuned,
        "fixed": {k: v for k, v in model.fixed.model_dump().items() if k not in tuned},
    }
    s, sci = model.study, model.scientific
    study = Study(
        path=source,
        name=s.name,
        dataset=s.dataset,
        seeds=s.seeds,
        budget=s.budget,
        data_path=s.data_path,
        limit=s.limit,
        paddings=tuple(sci.paddings),
        downsamplings=tuple(sci.downsamplings),
        nuisance=_nuisance_specs(model.nuisance, s.budget),
        fixed=resolved["fixed"],
        resolved=resolved,
        tune_seeds=s.tune_seeds,
        tune_epochs=s.tune_epochs,
        margin=s.margin,
        match=s.match,
    )
    if not study.variants:
        raise StudyError(f"{source}: [scientific] selects no registered variant.")
    problems = [
        f"{source}: {problem}. Use fewer stages ([fixed] stage_widths), a smaller "
        "kernel_size, or drop 'valid' from [scientific] paddings."
        for variant in study.variants
        if (problem := unbuildable(variant, study.settings({}), study.input_shape))
    ]
    if problems:
        raise StudyError("\n".join(problems))
    return _with_matched_widths(study, source)


def _with_matched_widths(study: Study, source: str) -> Study:
    """[study] match: each variant's widths scaled to cost what the first variant costs."""
    if study.match == "none":
        return study
    matched = matched_widths(
        study.variants, study.settings({}), study.input_shape, study.n_classes, study.match
    )
    problems = [
        f"{source}: [study] match = '{study.match}': variant {name} cannot be matched within "
        f"+-{TOLERANCE:.0%} by scaling its stage widths (best: {widths}, off by {error:+.1%}). "
        "Change stage_widths or drop the variant from [scientific]."
        for name, (widths, error) in matched.items()
        if abs(error) > TOLERANCE
    ]
    if problems:
        raise StudyError("\n".join(problems))
    widths = {name: w for name, (w, _) in matched.items()}
    return replace(study, widths=widths)


def _nuisance_specs(nuisance: NuisanceSection, budget: int) -> dict[str, NuisanceSpec]:
    specs = {}
    for key in NuisanceSection.model_fields:
        spec = getattr(nuisance, key)
        if isinstance(spec, Range):
            values = _grid(spec.min, spec.max, spec.sampling, budget)
            specs[key] = NuisanceSpec(key, values, spec.min, spec.max, spec.sampling)
        elif spec is not None:
            specs[key] = NuisanceSpec(key, tuple(float(v) for v in spec))
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
