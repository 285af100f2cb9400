"""Study files: every shipped one validates; bad ones give the promised messages."""

import json
import subprocess
import sys

import pytest
import tomllib

from cnnstudy.cli import main
from cnnstudy.core.study import SECTIONS, StudyError, StudyFile, load_defaults, load_study
from tests.helpers import EXPERIMENTS, ROOT


def test_shipped_studies_exist():
    names = {p.stem for p in EXPERIMENTS}
    assert {"default", "smoke", "digits", "cifar10"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_study_file_validates(path):
    study = load_study(path)
    assert study.name == path.stem
    assert study.variants and study.seeds >= 1
    assert "learning_rate" in study.nuisance


def test_default_study_is_the_promised_one():
    study = load_study(ROOT / "experiments/default.toml")
    assert study.dataset == "mnist5k"
    assert len(study.variants) == 8 and study.seeds >= 3
    assert set(study.downsamplings) == {"maxpool", "avgpool", "stride", "allconv"}
    assert study.fixed["head"] == "gap"  # the same head size under both paddings
    assert study.input_shape == (32, 32, 1)  # pad_input = 2: room for 3 valid stages
    assert len(study.nuisance["learning_rate"].values) >= 2  # lr is really tuned


def test_atlas_studies_differ_from_default_only_where_they_say():
    """Each atlas study changes its own question's setting (and, to fit the atlas's time,
    the levels, seeds or epochs its header comment names), nothing else."""
    base = load_study(ROOT / "experiments/default.toml").resolved
    for name, section, key, value, also in (
        ("classic", "fixed", "head", "flatten", {"epochs"}),
        ("isomacs", "study", "match", "macs", {"downsamplings"}),
        ("translated", "study", "dataset", "mnist5k_translated", {"downsamplings", "pad_input"}),
        ("cluttered", "study", "dataset", "mnist5k_cluttered", {"downsamplings", "pad_input"}),
    ):
        other = load_study(ROOT / f"experiments/{name}.toml").resolved
        assert other[section][key] == value
        for sec in ("scientific", "nuisance", "fixed"):
            diff = {k for k in base[sec] if base[sec][k] != other[sec].get(k)}
            assert diff <= also | ({key} if sec == section else set()), (name, diff)
        assert set(other["scientific"]["downsamplings"]) <= set(base["scientific"]["downsamplings"])


def test_tuning_trials_take_tune_epochs_capped_at_the_replicates():
    study = load_study(ROOT / "experiments/default.toml")
    assert (study.trial_epochs(tuning=True), study.trial_epochs(tuning=False)) == (3, 12)
    # 8 variants x (2 lr x 2 tuning seeds x 3 epochs + 3 seeds x 12 epochs): the ETA's work
    assert study.n_epochs == 8 * (2 * 2 * 3 + 3 * 12)
    short = load_study(ROOT / "experiments/default.toml", ["fixed.epochs=2"])
    assert (short.trial_epochs(tuning=True), short.trial_epochs(tuning=False)) == (2, 2)
    whole = load_study(ROOT / "experiments/default.toml", ["study.tune_epochs=0"])
    assert whole.trial_epochs(tuning=True) == 12


def test_smoke_study_is_one_seed_one_epoch():
    study = load_study(ROOT / "experiments/smoke.toml")
    assert (study.seeds, study.fixed["epochs"], len(study.variants)) == (1, 1, 6)


def test_file_overrides_the_shared_default_only_where_it_says(write_study):
    study = load_study(write_study('[fixed]\nepochs = 2\n[study]\nname = "x"\n'))
    assert study.fixed["epochs"] == 2
    assert study.fixed["batch_size"] == 64  # from defaults.toml


def test_set_overrides_single_values(write_study):
    path = write_study('[study]\nname = "x"\n')
    study = load_study(
        path,
        [
            "study.seeds=1",
            "scientific.paddings=['valid']",
            "study.dataset=digits",
            "fixed.stage_widths=[8]",
        ],
    )
    assert study.seeds == 1 and study.dataset == "digits"
    assert [v.name for v in study.variants] == ["valid_maxpool", "valid_avgpool", "valid_stride"]


def test_learning_rate_grid_is_log_spaced(write_study):
    path = write_study(
        "[study]\nbudget = 3\n[nuisance]\nlearning_rate = {min = 1e-4, max = 1e-2}\n"
    )
    assert load_study(path).nuisance["learning_rate"].values == (1e-4, 1e-3, 1e-2)


BAD = {
    "malformed": ("[study\nname = 1", ["not valid TOML"]),
    "unknown_section": (
        "[training]\nepochs = 3\n",
        ["unknown section [training]", "study, scientific"],
    ),
    "unknown_key": ("[fixed]\nepoch = 3\n", ["unknown key 'epoch'", "[fixed]", "epochs"]),
    "unknown_padding": ('[scientific]\npaddings = ["same", "full"]\n', ["'full'", "same, valid"]),
    "unknown_downsample": (
        '[scientific]\ndownsamplings = ["blur"]\n',
        ["'blur'", "maxpool, avgpool, stride"],
    ),
    "unknown_dataset": (
        '[study]\ndataset = "imagenet"\n',
        ["dataset", "'imagenet'", "mnist5k", "cifar10"],
    ),
    "zero_seeds": ("[study]\nseeds = 0\n", ["seeds = 0", "at least 1"]),
    "zero_epochs": ("[fixed]\nepochs = 0\n", ["epochs = 0", "at least 1"]),
    "lr_upside_down": (
        "[nuisance]\nlearning_rate = {min = 1e-2, max = 1e-4}\n",
        ["learning_rate", "upside down", "swap min and max"],
    ),
    "wrong_type": ('[fixed]\nepochs = "ten"\n', ["epochs", "must be a int"]),
    "tuned_and_fixed": (
        "[nuisance]\ndropout = [0.0, 0.5]\n[fixed]\ndropout = 0.1\n",
        ["'dropout' is in both"],
    ),
    "unbuildable": (
        '[study]\ndataset = "digits"\n[fixed]\nstage_widths = [8, 16]\n',
        ["variant valid_maxpool", "layer s2_maxpool", "8x8x1"],
    ),
    "typo_gets_a_suggestion": ("[study]\nseed = 3\n", ["unknown key 'seed'", "'seeds'"]),
    "log_range_from_zero": (
        "[nuisance]\nlearning_rate = {min = 0.0, max = 1e-2}\n",
        ["[nuisance] learning_rate", "min > 0", 'sampling = "linear"'],
    ),
    "nuisance_neither_range_nor_list": (
        "[nuisance]\ndropout = 0.5\n",
        ["[nuisance] dropout = 0.5", "range", "list of numbers"],
    ),
    "warmup_takes_every_epoch": (
        "[fixed]\nepochs = 3\nwarmup_epochs = 3\n",
        ["[fixed] warmup_epochs", "none of the 3 epochs", "below epochs"],
    ),
    "tuning_runs_only_warm_up": (
        "[study]\ntune_epochs = 1\n[fixed]\nwarmup_epochs = 1\n",
        ["[study] tune_epochs", "warmup_epochs = 1", "above warmup_epochs"],
    ),
    "fractions_leave_no_training_data": (  # the cross-field rule shows beside a field error
        "[fixed]\nval_fraction = 0.5\ntest_fraction = 0.45\nepochs = 0\n",
        ["[fixed] val_fraction + test_fraction", "10%", "[fixed] epochs = 0"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_study_files_name_file_key_and_allowed_values(case, write_study):
    body, needles = BAD[case]
    path = write_study(body, f"{case}.toml")
    with pytest.raises(StudyError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_cli_reports_bad_study_without_traceback(write_study, capsys):
    path = write_study("[fixed]\nepoch = 3\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown key 'epoch'" in err
    assert "Traceback" not in err


def test_console_script_exits_nonzero_before_training(write_study):
    path = write_study('[scientific]\npaddings = ["full"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "cnnstudy.cli", "sweep", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "'full'" in proc.stderr
    assert not (path.parent / "mlflow.db").exists()  # nothing logged


THREE_ERRORS = """
[study]
dataset = "imagenet"
[scientific]
paddings = ["same", "full"]
[nuisance]
dropout = [0.0, 0.5]
[fixed]
dropout = 0.1
"""


def test_every_error_of_a_file_is_reported_at_once(write_study, capsys):
    path = write_study(THREE_ERRORS)
    with pytest.raises(StudyError) as err:
        load_study(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    wheres = ["[study] dataset = 'imagenet'", "[scientific] paddings", "[fixed] dropout = 0.1"]
    for where, line in zip(wheres, lines, strict=True):
        assert where in line, (where, line)
    assert "mnist5k" in lines[0] and "same, valid" in lines[1] and "in both" in lines[2]

    assert main(["validate", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and "Traceback" not in stderr
    assert all(line in stderr for line in lines)


def test_same_file_same_fingerprint_and_resolved_is_json():
    first, second = (load_study(ROOT / "experiments/default.toml") for _ in range(2))
    assert first.fingerprint == second.fingerprint
    assert json.loads(json.dumps(first.resolved)) == first.resolved
    tuned = load_study(ROOT / "experiments/default.toml", ["nuisance.dropout=[0.0, 0.5]"])
    assert tuned.fingerprint != first.fingerprint
    assert "dropout" not in tuned.fixed and "dropout" in tuned.resolved["nuisance"]


def schema_from_cli(capsys) -> dict:
    assert main(["schema"]) == 0
    return json.loads(capsys.readouterr().out)


def test_schema_lists_the_sections_and_forbids_extra_keys(capsys):
    schema = schema_from_cli(capsys)
    assert list(schema["properties"]) == list(SECTIONS)
    assert schema["additionalProperties"] is False
    for definition in schema["$defs"].values():
        assert definition["additionalProperties"] is False, definition["title"]


def test_schema_defaults_and_descriptions_come_from_defaults_toml(capsys):
    defs = schema_from_cli(capsys)["$defs"]
    sections = {"study": "StudySection", "scientific": "ScientificSection"}
    sections |= {"nuisance": "NuisanceSection", "fixed": "FixedSection"}
    for section, body in load_defaults().items():
        props = defs[sections[section]]["properties"]
        for key, default in body.items():
            assert props[key]["default"] == default, (section, key)
            assert props[key].get("description"), (section, key)
    assert "95% val accuracy" in defs["FixedSection"]["properties"]["epochs"]["description"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_study_file_validates_against_the_schema(path, capsys):
    data = tomllib.loads(path.read_text())
    try:
        import jsonschema
    except ImportError:  # not installed: the model the schema is made from
        StudyFile.model_validate(data)
        return
    schema = schema_from_cli(capsys)
    jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "training": {}}, schema)
