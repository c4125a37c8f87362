"""hw2lib.report.params: the parameters cell's types, values checked before anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hw2lib import cli
from hw2lib.report import params, run
from hw2lib.report.params import ParameterError

CELL = '''# comment line
epochs = 5                    # number of epochs
lr = 0.01
name = "resnet50"
flag = False
n_max = None                  # type: int|None  cap
seeds: list[int] = [0, 1]
channel = "top"               # type: str|int
tags = ["a", "b"]
'''


def test_cell_types_from_annotations_and_defaults():
    p = params.parse_parameters_cell(CELL)
    assert p["epochs"].kinds == ("int",) and p["epochs"].help == "number of epochs"
    assert p["lr"].kinds == ("float",) and p["name"].kinds == ("str",)
    assert p["flag"].kinds == ("bool",) and p["n_max"].kinds == ("int", "None")
    assert p["seeds"].kinds == ("list",) and p["seeds"].item == "int"
    assert p["channel"].kinds == ("str", "int") and p["tags"].kinds == ("list",)
    with pytest.raises(ParameterError, match="a None default needs a type"):
        params.parse_parameters_cell("x = None\n")


@pytest.mark.parametrize("key,value,expected", [
    ("epochs", 3, 3), ("lr", "1e-3", 0.001), ("lr", 1, 1.0), ("n_max", None, None),
    ("n_max", 300, 300), ("seeds", [0, 1, 2], [0, 1, 2]), ("channel", 7, 7),
    ("channel", "top", "top"), ("flag", True, True)])
def test_good_values_are_kept_or_converted(key, value, expected):
    p = params.parse_parameters_cell(CELL)
    got = params.check_value("nb", p[key], value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("key,value,message", [
    ("epochs", 2.5, r"'epochs' = 2.5 is not valid: expected int"),
    ("epochs", "abc", r"'epochs' = 'abc' is not valid: expected int"),
    ("epochs", True, "expected int"),
    ("epochs", 0, r"'epochs' = 0 is out of range: expected a number > 0"),
    ("lr", "fast", "expected float"), ("lr", -1, "> 0"),
    ("n_max", "many", "expected int or null"),
    ("seeds", [0, "x"], r"expected list\[int\]"), ("flag", "yes", "expected bool")])
def test_bad_values_name_the_key_the_value_and_what_is_expected(key, value, message):
    p = params.parse_parameters_cell(CELL)
    with pytest.raises(ParameterError, match=message):
        params.check_value("nb", p[key], value)


def test_choices_are_checked():
    p = params.parse_parameters_cell('optimizer = "sgd"\n')
    with pytest.raises(ParameterError, match="not one of sgd, adam, adamw"):
        params.check_value("nb", p["optimizer"], "rmsprop")


def test_every_notebook_parameter_has_a_type_and_valid_default():
    for name in run.NOTEBOOKS:
        for p in run.notebook_parameters(name).values():
            assert params.check_value(name, p, p.default) == p.default, (name, p.name)


def test_every_profile_resolves_for_every_notebook():
    for profile in run.PROFILES:
        planned = run.plan_parameters(profile, list(run.NOTEBOOKS), {})
        assert set(planned) == set(run.NOTEBOOKS)
    q = run.plan_parameters("quick", list(run.NOTEBOOKS), {"epochs": 2, "lr": "1e-3"})
    assert q["A-train"]["epochs"] == 2 and q["A-train"]["lr"] == 0.001
    assert "epochs" not in q["A-vis"]  # a -p key goes only to the notebooks that define it
    assert q["C-longtail"]["epochs"] == 2 and "lr" not in q["C-longtail"]


def test_a_key_no_selected_notebook_defines_is_an_error():
    with pytest.raises(run.RunnerError, match="-p epochz: no selected notebook"):
        run.plan_parameters("smoke", ["A-train", "A-vis"], {"epochz": 2})
    with pytest.raises(run.RunnerError, match="no selected notebook.*'rho'"):
        run.plan_parameters("smoke", ["A-train"], {"rho": 10})


def test_force_is_set_where_defined():
    planned = run.plan_parameters("smoke", list(run.NOTEBOOKS), {}, force=True)
    assert planned["A-train"]["force"] is True and "force" not in planned["A-vis"]


@pytest.mark.parametrize("args,message", [
    (["-p", "epochs", "abc"], "'epochs' = 'abc' is not valid: expected int"),
    (["-p", "epochs", "2.5"], "'epochs' = 2.5 is not valid"),
    (["-p", "nope", "1"], "no selected notebook"),
])
def test_report_stops_before_running_anything(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert cli.main(["report", "--profile", "quick", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing ran, nothing was written


def test_the_cli_refuses_a_bad_value_without_importing_torch(tmp_path):
    """A fresh interpreter: checking every parameter of every notebook (list items against the
    catalogues included) imports no torch, so a bad value is answered at once."""
    code = ("import sys; from hw2lib import cli; "
            f"rc = cli.main(['report', '--profile', 'quick', '--out', {str(tmp_path / 'o')!r}, "
            "'-p', 'epochs', 'abc', '-p', 'experiments', '[\"all\"]']); "
            "heavy = sorted(m for m in ('torch', 'torchvision', 'pandas', 'sklearn') "
            "if m in sys.modules); print('rc', rc, 'heavy', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["rc", "2", "heavy", "[]"], proc.stdout + proc.stderr
    assert "'epochs'" in proc.stderr
