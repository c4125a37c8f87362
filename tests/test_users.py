"""The users' own ways (papermill by hand, their data, another working directory) and nothing
lost or forged on the way: each test reproduces a reported defect (issue 20)."""

from __future__ import annotations

import io as _io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hw2lib import cli, constants, params, paths, run
from hw2lib.params import ParameterError

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- parameters cells


@pytest.mark.parametrize("nb", run.NOTEBOOKS)
def test_papermill_reads_every_parameter_without_a_warning(nb):
    """papermill's own inspection: it used to warn "Unable to parse line" / miss `x: int | None`
    (then "Passed unknown parameter" on every run)."""
    from papermill.inspection import inspect_notebook

    log = _io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger("papermill").addHandler(handler)
    try:
        seen = inspect_notebook(str(run.notebook_path(nb)))
    finally:
        logging.getLogger("papermill").removeHandler(handler)
    assert log.getvalue() == ""
    assert set(seen) == set(run.notebook_parameters(nb))


def test_type_comments_give_the_types():
    p = params.parse_parameters_cell('n = None  # type: int|None  a cap\n'
                                     'c = "top"  # type: str|int\n'
                                     'g = 6  # type: int|list[int]  k or a list\n')
    assert p["n"].kinds == ("int", "None") and p["n"].help == "a cap"
    assert p["c"].kinds == ("str", "int") and p["c"].help == ""
    assert p["g"].kinds == ("int", "list") and p["g"].item == "int"


@pytest.mark.parametrize("line,message", [
    ("epochs = 2 * 3", r"x.ipynb, parameters cell line 2: `epochs = 2 \* 3`: the default of "
                       r"'epochs' is not a plain value"),
    ("n: int | None = None", r"line 2: `n: int \| None = None`: papermill cannot read the "
                             r"annotation 'int \| None'; write `n = None  # type: int\|None`"),
    ("lr = 0.1  # None = off", r"line 2: .*papermill cannot read a line with a second '='"),
    ("epochs = (", r"line 2: .*not valid Python"),
])
def test_a_cell_papermill_cannot_read_is_one_error_naming_notebook_and_line(line, message):
    with pytest.raises(ParameterError, match=message):
        params.parse_parameters_cell(f"seed = 0\n{line}\n", "x.ipynb")


@pytest.fixture
def edited_notebooks(tmp_path, monkeypatch):
    """A copy of the notebooks folder whose A-train parameters cell a user edited."""
    nbdir = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", nbdir)
    path = nbdir / "A-train.ipynb"
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = ["".join(cell["source"]).replace("epochs = 15", "epochs = 2 * 3")]
    path.write_text(json.dumps(nb))
    monkeypatch.setattr(run, "NOTEBOOK_DIR", nbdir)
    return nbdir


@pytest.mark.parametrize("cmd", [["plan", "--only", "A-train"], ["run", "A-train"],
                                 ["report", "--only", "A-train"]])
def test_an_edited_cell_is_one_line_not_a_traceback(edited_notebooks, tmp_path, capsys, cmd):
    out = tmp_path / "out"
    extra = [] if cmd[0] == "plan" else ["--out", str(out)]
    assert cli.main([*cmd, "--profile", "smoke", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "A-train.ipynb, parameters cell line" in err
    assert "`epochs = 2 * 3`" in err and "Traceback" not in err
    assert not out.exists()


def test_notebook_defaults_are_the_full_profile():
    """JupyterLab without a profile runs `full`'s protocol (A-train was 5 epochs, lr 0.01, ...)."""
    full = yaml.safe_load((REPO / "notebooks/profiles/full.yaml").read_text())
    for nb, values in full.items():
        defaults = {k: p.default for k, p in run.notebook_parameters(nb).items()}
        differ = {k: (v, defaults[k]) for k, v in values.items() if defaults[k] != v}
        assert differ == {}, f"{nb}: full.yaml vs the notebook's defaults {differ}"


def test_choice_lists_match_the_modules_that_define_them():
    from hw2lib import losses, task_b, task_c

    assert constants.LOSSES == tuple(losses.available_losses())
    assert constants.C_BACKBONES == tuple(task_c.backbones(lr_pretrained=0.01))
    assert params.ITEM_CHOICES["experiments"]() == tuple(task_b.EXPERIMENTS)


BAD_LISTS = [
    (["-p", "losses", '["nope"]'], "parameter 'losses' = [\"nope\"]: 'nope' is not one of ce,"),
    (["-p", "experiments", '["nope"]'], "'nope' is not one of resnet18,"),
    (["-p", "experiments", "[]"], "parameter 'experiments' = [] is empty"),
    (["-p", "backbones", "[resnext18, resnet99]"], "'resnet99' is not one of resnext18,"),
    (["-p", "seeds", "[0, -1]"], "every item must be >= 0"),
    (["-p", "image_folder", "/nonexistent/imgs"], "/nonexistent/imgs does not exist; give an "
                                                  "ImageFolder root"),
    (["-p", "weights", "no-such-weights.pt"], "no-such-weights.pt does not exist; give a "
                                              "state-dict file"),
]


@pytest.mark.parametrize("cmd", ["report", "plan", "run"])
@pytest.mark.parametrize("args,message", BAD_LISTS)
def test_list_items_and_paths_are_checked_before_any_folder(tmp_path, capsys, cmd, args, message):
    out = tmp_path / "out"
    if cmd == "run":
        nb = {"losses": "C-longtail", "backbones": "C-longtail", "experiments": "B-ablation",
              "seeds": "B-ablation", "image_folder": "A-train", "weights": "A-train"}[args[1]]
        argv = ["run", nb, "--profile", "smoke", "--out", str(out), *args]
    elif cmd == "plan":
        argv = ["plan", "--profile", "smoke", *args]
    else:
        argv = ["report", "--profile", "smoke", "--out", str(out), *args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_relative_paths_are_made_absolute_from_the_callers_directory(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    got = run.plan_parameters("smoke", ["A-train"], {"image_folder": "imgs"})["A-train"]
    assert got["image_folder"] == str(tmp_path / "imgs")


# --------------------------------------------------------------------------- where files go


def test_data_and_reports_live_in_the_project_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ENV_DATA, raising=False)
    monkeypatch.delenv(paths.ENV_REPORTS, raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.project_root() == REPO
    assert paths.data_root() == REPO / "data" and paths.data_dir() == REPO / "data"
    assert paths.report_path("interactive/runs/A-train") == REPO / "reports/interactive/runs/A-train"
    assert paths.report_path(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv(paths.ENV_DATA, str(tmp_path / "d"))
    monkeypatch.setenv(paths.ENV_REPORTS, "r")
    assert paths.data_dir() == tmp_path / "d" and paths.reports_root() == tmp_path / "r"


def test_hw2_data_from_another_directory_uses_the_project_rule(tmp_path, monkeypatch,
                                                                small_folder):
    """`hw2 data` used to write ./data in whatever directory it was typed in."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(paths.ENV_DATA, str(tmp_path / "store"))
    assert cli.main(["data", "--data-dir", str(small_folder), "--image-size", "16"]) == 0
    assert list(elsewhere.iterdir()) == []
    assert list((tmp_path / "store" / "splits").glob("*.csv"))


@pytest.mark.notebook
def test_plain_papermill_from_the_repo_root_writes_inside_the_project(tmp_path,
                                                                      synthetic_imagefolder):
    """`papermill notebooks/A-train.ipynb out.ipynb -p ...` typed in the repository root, no
    --cwd: data and runs used to land in the repository's parent."""
    papermill = Path(sys.executable).with_name("papermill")
    before = set(REPO.parent.iterdir())
    env = {**os.environ, paths.ENV_DATA: str(tmp_path / "data"),
           paths.ENV_REPORTS: str(tmp_path / "reports")}
    smoke = yaml.safe_load((REPO / "notebooks/profiles/smoke.yaml").read_text())["A-train"]
    argv = [str(papermill), "notebooks/A-train.ipynb", str(tmp_path / "out.ipynb"),
            "-p", "image_folder", str(synthetic_imagefolder), "-p", "pretrained", "False"]
    for k, v in smoke.items():
        if k != "pretrained":
            argv += ["-p", k, str(v)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Passed unknown parameter" not in proc.stderr
    assert "Unable to parse" not in proc.stderr
    assert set(REPO.parent.iterdir()) == before
    assert (tmp_path / "reports/interactive/runs/A-train/results.json").exists()
    assert list((tmp_path / "data" / "cache").glob("*.pt"))
