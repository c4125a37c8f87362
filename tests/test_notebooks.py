"""Each notebook under papermill with the `smoke` profile, on synthetic data (and on real EuroSAT
where ../shared/data/EuroSAT.zip exists)."""

import json
import math

import pytest

from hw2lib import cli, run

pytestmark = pytest.mark.notebook

RESULT_KEYS = {"headline", "metrics", "warnings", "environment"}


def _overrides(root, data_dir, classes):
    common = {"image_folder": str(root), "data_dir": str(data_dir)}
    ov = {nb: dict(common) for nb in run.NOTEBOOKS}
    ov["A-vis"]["tile_classes"] = list(classes[:2])
    return ov


@pytest.fixture(scope="module")
def smoke_report(synthetic_imagefolder, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke-report")
    classes = sorted(p.name for p in synthetic_imagefolder.iterdir() if p.is_dir())
    ov = _overrides(synthetic_imagefolder, out / "data", classes)
    index, results = run.report("smoke", out, None, ov)
    return out, index, results, ov


def _finite_numbers(obj):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return True
    if isinstance(obj, (int, float)):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


def test_smoke_report_passes_every_notebook(smoke_report):
    out, index, results, _ = smoke_report
    status = {r.notebook: (r.status, r.error) for r in results}
    assert status == {nb: ("passed", None) for nb in run.NOTEBOOKS}
    page = index.read_text()
    assert page.count("class=passed>passed") == len(run.NOTEBOOKS)
    for nb in run.NOTEBOOKS:
        html = (out / f"{nb}.html").read_text()
        assert "Traceback" not in html and "<img" in html  # figures embedded
        assert "study.notebook_setup(" not in html  # set-up code hidden, its output kept


@pytest.mark.parametrize("nb", run.NOTEBOOKS)
def test_smoke_results_json_has_finite_headline(smoke_report, nb):
    out = smoke_report[0]
    res = json.loads((out / "runs" / nb / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    assert res["headline"], f"{nb}: no headline numbers"
    for h in res["headline"]:
        assert h["value"] is not None and math.isfinite(h["value"]), h
    assert _finite_numbers(res["metrics"])


def test_smoke_random_init_is_flagged(smoke_report):
    out, index, _, _ = smoke_report
    res = json.loads((out / "runs/A-train/results.json").read_text())
    # no ImageNet weights can be had here: the smoke profile allows random init, loudly
    assert any("RANDOM INITIALIZATION" in w for w in res["warnings"])
    assert "RANDOM INITIALIZATION" in index.read_text()
    assert "RANDOM INITIALIZATION" in (out / "A-train.html").read_text()


def test_finished_notebooks_are_not_rerun(smoke_report, capsys):
    out, _, results, ov = smoke_report
    _, again = run.report("smoke", out, ["A-train"], ov)
    assert again[0].status == "passed" and again[0].duration_s == results[0].duration_s
    assert "already passed" in capsys.readouterr().out


def test_failing_notebook_gets_page_failed_entry_and_nonzero_exit(smoke_report, capsys):
    out, _, _, ov = smoke_report
    p = ov["B-ablation"]
    code = cli.main(["report", "--profile", "smoke", "--out", str(out), "--only", "B-ablation",
                     "-p", "experiments", "[resnet19]", "-p", "image_folder", p["image_folder"],
                     "-p", "data_dir", p["data_dir"]])
    assert code == 1
    err = capsys.readouterr().err
    assert "B-ablation failed" in err and "B-ablation.html" in err
    assert "Unknown Task B experiment 'resnet19'" in (out / "B-ablation.html").read_text()
    assert "class=failed>failed" in (out / "index.html").read_text()
    assert run.read_status(out)["B-ablation"]["status"] == "failed"


@pytest.mark.realdata
def test_smoke_report_on_real_eurosat(real_eurosat_zip, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke-real")
    ov = {nb: {"source": str(real_eurosat_zip), "data_dir": str(out / "data")}
          for nb in ("A-train", "A-vis")}
    _, results = run.report("smoke", out, ["A-train", "A-vis"], ov)
    assert [(r.status, r.error) for r in results] == [("passed", None)] * 2
    res = json.loads((out / "runs/A-vis/results.json").read_text())
    assert set(res["metrics"]["channels"]) == {"Pasture", "Industrial"}
