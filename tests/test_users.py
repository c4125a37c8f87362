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

from hw2lib import cli
from hw2lib.core import constants, paths
from hw2lib.report import params, run
from hw2lib.report.page import HIDE_INPUT_TAG, render_html
from hw2lib.report.params import ParameterError

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
    from hw2lib.nets import losses

    assert constants.LOSSES == tuple(losses.available_losses())


BAD_LISTS = [
    (["-p", "losses", '["nope"]'], "parameter 'losses' = [\"nope\"]: 'nope' is not one of ce,"),
    (["-p", "experiments", '["nope"]'], "'nope' is not one of all, resnet18,"),
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
    assert cli.main(["data", "--image-folder", str(small_folder), "--image-size", "16"]) == 0
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
    # no warning in the pages either (tqdm.auto used to print "IProgress not found" in a kernel)
    assert "IProgress not found" not in (tmp_path / "out.ipynb").read_text()
    assert set(REPO.parent.iterdir()) == before
    assert (tmp_path / "reports/interactive/runs/A-train/results.json").exists()
    assert list((tmp_path / "data" / "cache").glob("*.pt"))


# --------------------------------------------------------------------------- the data: nothing forged


def _load(data_dir, folder, **kw):
    from hw2lib import data as D

    return D.load_dataset(data_dir, image_folder=folder, image_size=16, progress=False, **kw)


def test_a_damaged_cache_is_rebuilt_with_a_warning_and_its_digest_is_in_the_identity(
        tmp_path, small_folder):
    from hw2lib import data as D
    from hw2lib.train.experiment import data_fingerprint

    ds = _load(tmp_path / "d", small_folder)
    x0, digest = ds.x.clone(), ds.cache_digest
    assert len(digest) == 64 and data_fingerprint(ds)["cache_sha256"] == digest[:16]
    raw = ds.cache_path.read_bytes()
    at = raw.find(x0.numpy().tobytes()[:48])  # the pixels, stored uncompressed in the .pt
    assert at > 0
    damaged = bytearray(raw)
    for i in range(at + 100, at + 140):
        damaged[i] ^= 0xFF
    ds.cache_path.write_bytes(bytes(damaged))
    with pytest.warns(D.DataWarning, match="does not match the digest written when it was built"):
        again = _load(tmp_path / "d", small_folder)
    assert torch_equal(again.x, x0) and again.cache_digest == digest


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_an_image_replaced_with_the_same_size_and_mtime_is_noticed(tmp_path, make_imagefolder):
    folder = make_imagefolder(tmp_path / "imgs", ("a", "b", "c"), per_class=4, size=16,
                              ext=".bmp")
    ds = _load(tmp_path / "d", folder)
    victim = folder / "a" / "a_1.bmp"
    st = victim.stat()
    body = bytearray(victim.read_bytes())
    for i in range(len(body) - 60, len(body)):  # BMP pixels: same size, another picture
        body[i] ^= 0xFF
    victim.write_bytes(bytes(body))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    again = _load(tmp_path / "d", folder)
    assert again.cache_path != ds.cache_path and again.cache_digest != ds.cache_digest
    row = again.paths.index("a/a_1.bmp")
    assert not torch_equal(again.x[row], ds.x[row])


def test_a_killed_cache_write_leaves_no_temp_file_behind(tmp_path, small_folder):
    cache = tmp_path / "d" / "cache"
    cache.mkdir(parents=True)
    old = cache / ".images-16px-0123.pt.tmp-abc"
    old.write_bytes(b"\0" * 1000)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    fresh = cache / ".images-16px-4567.pt.tmp-def"  # another process writing right now
    fresh.write_bytes(b"\0" * 10)
    _load(tmp_path / "d", small_folder)
    assert not old.exists() and fresh.exists()


def test_split_file_with_a_bom_is_accepted_and_a_non_utf8_one_is_one_error(tmp_path,
                                                                           small_folder):
    from hw2lib import data as D

    ds = _load(tmp_path / "d", small_folder)
    text = ds.split_csv.read_text()
    ds.split_csv.write_bytes(b"\xef\xbb\xbf" + text.encode())
    again = _load(tmp_path / "d", small_folder)
    assert again.paths == ds.paths and again.split_csv.read_bytes().startswith(b"\xef\xbb\xbf")
    ds.split_csv.write_bytes(text.encode().replace(b"train", b"tr\xe4in", 1))
    with pytest.raises(D.DataError, match=r"split file .* is not UTF-8 text \(byte \d+"):
        _load(tmp_path / "d", small_folder)


def test_a_folder_in_the_zip_variable_is_named_as_its_value(tmp_path, monkeypatch, small_folder):
    from hw2lib import data as D

    monkeypatch.setenv("HW2_EUROSAT_ZIP", str(small_folder))
    with pytest.raises(D.DataError, match=r"\$HW2_EUROSAT_ZIP=.* names the folder .*images, "
                                          r"which is not an extracted EuroSAT"):
        D.load_dataset(tmp_path / "d", progress=False)


def test_a_weights_file_torch_refuses_is_one_clear_line(tmp_path):
    import torch

    from hw2lib.nets import models

    path = tmp_path / "w.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module, not a state dict
    with pytest.raises(ValueError) as info:
        models._read_state_file(path)
    msg = str(info.value)
    assert "holds Python objects besides tensors" in msg and "\n" not in msg
    assert "torch.save(model.state_dict(), PATH)" in msg


# --------------------------------------------------------------------------- pages: nothing live from data

HOSTILE = "Pasture<img src=x onerror=alert(1)><script>alert(2)</script>"


def _markdown_shown(monkeypatch, fn, *args, **kw) -> str:
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    fn(*args, **kw)
    return shown[0].data


def _rendered(markdown: str) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": markdown})]
    nb.cells = [cell]
    return HTMLExporter(template_name="lab").from_notebook_node(nb)[0]


def test_a_class_name_in_findings_is_text_on_the_page(monkeypatch):
    from hw2lib.study import notebook

    md = _markdown_shown(monkeypatch, notebook.show_findings,
                         [f"{HOSTILE} is confused with Forest_1 *most*"], heading=HOSTILE)
    page = _rendered(md)
    assert "<img src=x" not in page and "<script>alert(2)" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "Forest_1 *most*" in page
    note = _rendered(_markdown_shown(monkeypatch, notebook.show_note, HOSTILE))
    assert "<img src=x" not in note and "&lt;script&gt;" in note


def test_quotes_in_findings_show_as_quotes(monkeypatch):
    """The quick report's B page showed "the report&#x27;s final model": the escaped quote's
    `#` was then backslashed as Markdown, which broke the entity."""
    import re

    from hw2lib.study import notebook

    page = _rendered(_markdown_shown(monkeypatch, notebook.show_findings,
                                     ['the report\'s "final" model & #1']))
    assert "&amp;#x27;" not in page and "&amp;quot;" not in page
    assert re.search(r"the report(&#x27;|&#39;|')s (&quot;|\")final(&quot;|\") model &amp; #1",
                     page), page[-2000:]


def test_the_index_escapes_every_string_from_status_and_results(tmp_path):
    from hw2lib.report import index

    run.write_status(tmp_path, {"notebook": "A-train", "status": "passed", "duration_s": 1.0,
                                 "html": "A-train.html'><script>x</script>", "executed": None,
                                 "run_dir": "runs/A-train", "params": {"image_folder": HOSTILE},
                                 "error": HOSTILE, "started": "", "profile": "smoke",
                                 "previous_html": None})
    (tmp_path / "runs/A-train").mkdir(parents=True)
    (tmp_path / "runs/A-train/results.json").write_text(json.dumps(
        {"headline": [{"name": HOSTILE, "value": 0.5, "reference": None, "note": HOSTILE,
                       "run_id": HOSTILE}], "warnings": [HOSTILE],
         "environment": {HOSTILE: HOSTILE}}))
    page = index.write_index(tmp_path, "smoke", run.read_status(tmp_path)[0]).read_text()
    assert "<script>" not in page and "<img src=x" not in page and "'><" not in page
    assert page.count("&lt;script&gt;alert(2)&lt;/script&gt;") >= 5
    assert "<th>HW2 report (its split)</th>" in page  # its numbers are on its own split


# --------------------------------------------------------------------------- nothing lost: kills, locks


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (no except clause catches it)."""


def _passed(out, name, params):
    run.write_status(out, {"notebook": name, "status": "passed", "duration_s": 1.0,
                            "html": f"{name}.html", "executed": None, "run_dir": f"runs/{name}",
                            "params": params, "error": None, "started": "", "profile": "smoke",
                            "previous_html": None})
    (out / "runs" / name).mkdir(parents=True, exist_ok=True)
    (out / "runs" / name / "results.json").write_text(json.dumps({"run_id": "old", "inputs": {}}))
    (out / f"{name}.html").write_text("page")


def test_a_rerun_killed_mid_notebook_is_repaired_by_the_next_plain_run(tmp_path, monkeypatch):
    """kill -9 during a re-run with changed parameters used to leave status "passed" with the
    results moved away: A-train skipped and A-vis blocked forever."""
    import papermill

    _passed(tmp_path, "A-train", {"epochs": 1})

    def killed(*a, **k):
        # at the kill: the old results are gone, and the status no longer says "passed"
        assert not (tmp_path / "runs/A-train/results.json").exists()
        assert run.read_status(tmp_path)[0]["A-train"]["status"] == "running"
        raise Killed

    monkeypatch.setattr(papermill, "execute_notebook", killed)
    with pytest.raises(Killed):
        run.run_notebook("A-train", "smoke", {"epochs": 2}, tmp_path, log_output=False)
    assert run.read_status(tmp_path)[0]["A-train"]["status"] == "running"
    calls = []
    monkeypatch.setattr(run, "run_notebook", lambda name, *a, **k: calls.append(name) or
                        run.RunResult(name, "passed", 0, None, None, "", {}))
    run._run_one("A-train", "smoke", {"epochs": 1}, tmp_path, False)  # even the old parameters
    assert calls == ["A-train"]


def test_sigterm_is_treated_as_ctrl_c(tmp_path, monkeypatch):
    import signal
    import time

    import papermill

    def terminated(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the run")

    monkeypatch.setattr(papermill, "execute_notebook", terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run.report("smoke", tmp_path, ["A-train"])
    assert signal.getsignal(signal.SIGTERM) is before
    st = run.read_status(tmp_path)[0]["A-train"]
    assert st["status"] == "interrupted" and "SIGTERM" in st["error"]
    assert "class=interrupted>interrupted" in (tmp_path / "index.html").read_text()
    assert not (tmp_path / ".hw2-lock").exists()


def test_a_second_report_into_a_busy_folder_is_refused_naming_the_other_process(tmp_path,
                                                                                  capsys):
    from hw2lib.report import folder_lock

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = run.prepare_out(tmp_path / "rep")
        (out / folder_lock.LOCK_NAME).write_text(json.dumps(
            {"pid": other.pid, "host": __import__("socket").gethostname(), "since": "now"}))
        assert cli.main(["report", "--profile", "smoke", "--only", "A-train", "--out",
                         str(out)]) == 2
        err = capsys.readouterr().err
        assert f"report folder {out} is in use by another hw2 process (PID {other.pid}" in err
        assert not (out / "status.json").exists()
    finally:
        other.kill()
        other.wait()
    lock = folder_lock.acquire(out)  # its process is gone: the lock is taken over
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    folder_lock.release(lock)
    assert not lock.exists()


def test_a_folder_with_only_a_status_file_is_not_a_report(tmp_path):
    (tmp_path / "status.json").write_text("{}")
    (tmp_path / "index.html").write_text("someone else's page")
    with pytest.raises(run.RunnerError, match="is not an hw2 report folder"):
        run.prepare_out(tmp_path)
    assert (tmp_path / "index.html").read_text() == "someone else's page"


def test_written_files_follow_the_umask(tmp_path):
    from hw2lib.core import io
    from hw2lib.report import index

    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "status.json", {})
        page = index.write_index(tmp_path, "smoke", {})
    finally:
        os.umask(old)
    assert (tmp_path / "status.json").stat().st_mode & 0o777 == 0o644
    assert page.stat().st_mode & 0o777 == 0o644


def test_a_vis_first_run_does_not_say_its_input_changed(tmp_path, monkeypatch, capsys):
    def fake(name, profile, params, out, **kw):
        if name == "A-train":
            (out / "runs/A-train").mkdir(parents=True, exist_ok=True)
            (out / "runs/A-train/results.json").write_text(json.dumps({"run_id": "r1"}))
        rec = run.RunResult(name, "passed", 0.1, None, None, f"runs/{name}", params)
        run.write_status(out, rec.__dict__)
        return rec

    monkeypatch.setattr(run, "run_notebook", fake)
    run.report("smoke", tmp_path, ["A-train", "A-vis"])
    assert "its input changed" not in capsys.readouterr().out


# --------------------------------------------------------------------------- a GPU box's own torch


def _make_n(*args) -> str:
    proc = subprocess.run(["make", "-n", "venv", "-W", "pyproject.toml", *args], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_installs_the_pinned_torch_by_default_and_keeps_the_systems_on_request(tmp_path):
    default = _make_n(f"VENV={tmp_path}/v")
    assert "check-python" in default  # the Python is checked before the venv is made
    assert "--quiet -c constraints.txt -e '.[dev]'" in default  # the pinned install line
    assert "--system-site-packages" not in default
    system = _make_n(f"VENV={tmp_path}/v", "SYSTEM_TORCH=1", "PYTHON=python3")
    assert f"python3 -m venv --system-site-packages {tmp_path}/v" in system
    assert "constraints.txt" not in system.split("--upgrade pip")[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_an_older_drivers_route_keeps_the_pins_from_another_index(tmp_path):
    """TORCH_INDEX: torch and torchvision, still pinned, from a PyTorch index of an older CUDA;
    the rest as usual (issue 28)."""
    cu126 = "https://download.pytorch.org/whl/cu126"
    lines = _make_n(f"VENV={tmp_path}/v", f"TORCH_INDEX={cu126}").splitlines()
    first = next(i for i, line in enumerate(lines) if f"--index-url {cu126}" in line)
    assert "-c constraints.txt" in lines[first] and lines[first].endswith("torch torchvision")
    assert "-e '.[dev]'" in lines[first + 1] and "--index-url" not in lines[first + 1]
    assert "--index-url" not in _make_n(f"VENV={tmp_path}/v")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_system_torch_without_a_torch_is_refused_before_a_venv_is_made(tmp_path):
    bare = tmp_path / "python-without-torch"
    bare.write_text("#!/bin/sh\n[ \"$1\" = -c ] && exit 1\nexec python3 \"$@\"\n")
    bare.chmod(0o755)
    # the check the venv's recipe runs first (`make check-python`): it builds and installs nothing
    proc = subprocess.run(["make", "check-python", "SYSTEM_TORCH=1", f"PYTHON={bare}",
                           f"VENV={tmp_path}/v"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "SYSTEM_TORCH=1, but" in proc.stderr and "has no torch/torchvision" in proc.stderr
    assert not (tmp_path / "v").exists()


# --------------------------------------------------------------------------- a page a reader enjoys


def test_pages_fold_code_keep_outputs_in_view_and_link_the_executed_notebook(tmp_path):
    import re

    import nbformat

    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
           "AABJRU5ErkJggg==")
    nb = nbformat.v4.new_notebook()
    setup = nbformat.v4.new_code_cell("s = notebook.setup_secret()", metadata={
        "tags": [HIDE_INPUT_TAG]})
    setup.outputs = [nbformat.v4.new_output("stream", name="stdout", text="device=cpu\n")]
    fig = nbformat.v4.new_code_cell("plots.make_figure(history)")
    fig.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png}),
                   nbformat.v4.new_output("display_data",
                                          data={"text/markdown": "- finding FOUND-IT"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), setup, fig]
    executed = tmp_path / "executed" / "A-train.ipynb"
    executed.parent.mkdir()
    nbformat.write(nb, str(executed))
    render_html(executed, tmp_path / "A-train.html")
    page = (tmp_path / "A-train.html").read_text()
    assert "setup_secret" not in page and "device=cpu" in page
    folded = re.findall(r'<details class="hw2-code"><summary>code</summary>(.*?)</details>',
                        page, re.S)
    assert len(folded) == 1 and "make_figure" in folded[0]
    assert "<img" not in folded[0] and "FOUND-IT" not in folded[0]
    assert page.index("<img") > page.index("</details>") and "FOUND-IT" in page
    assert '<a href="executed/A-train.ipynb">' in page


@pytest.mark.notebook
def test_ctrl_c_in_a_terminal_ends_in_one_line_without_a_traceback(tmp_path,
                                                                   synthetic_imagefolder):
    """^C typed in the terminal (through a pseudo-terminal, so the tty sends SIGINT to the
    foreground process group) while the kernel runs the notebook: no ZMQError or other
    traceback, status "interrupted", the index written, exit 130."""
    import pty
    import select
    import time

    hw2 = Path(sys.executable).with_name("hw2")
    out = tmp_path / "rep"
    argv = [str(hw2), "report", "--only", "A-train", "--profile", "smoke", "-p", "image_folder",
            str(synthetic_imagefolder), "-p", "data_dir", str(tmp_path / "data"), "--out", str(out)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes hw2 on the pseudo-terminal
        os.execv(argv[0], argv)
    text, t0, sent = b"", time.time(), None
    while time.time() - t0 < 600:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            text += chunk
        if sent is None and b"device=" in text:  # the set-up cell runs in the kernel
            os.write(fd, b"\x03")
            sent = time.time()
    _, code = os.waitpid(pid, 0)
    shown = text.decode(errors="replace")
    assert sent is not None, shown
    assert os.waitstatus_to_exitcode(code) == 130, shown
    assert "Traceback" not in shown and "ZMQError" not in shown, shown
    assert "[A-train] INTERRUPTED" in shown and (out / "index.html").exists()
    assert run.read_status(out)[0]["A-train"]["status"] == "interrupted"
