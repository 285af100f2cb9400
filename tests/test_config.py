"""Study files: every shipped one validates; bad ones give the promised messages."""

import subprocess
import sys

import pytest

from cnnstudy.cli import main
from cnnstudy.core.study import StudyError, load_study
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
    assert len(study.variants) == 6 and study.seeds >= 3
    assert len(study.nuisance["learning_rate"].values) >= 2  # lr is really tuned


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
