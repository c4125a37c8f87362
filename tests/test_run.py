"""Runner and index logic that needs no kernel: profiles, the report folder, status files,
dependencies by content, the index written whatever happens."""

import json

import pytest

from hw2lib import cli
from hw2lib.report import index, run


def test_unknown_parameter_is_an_error_listing_known_ones():
    with pytest.raises(run.RunnerError, match=r"unknown parameter 'epochz'.*Known: .*epochs"):
        run.resolve_parameters("A-train", {}, {"epochz": 3})


def test_runner_owned_parameter_cannot_be_set():
    with pytest.raises(run.RunnerError, match="set by the runner"):
        run.resolve_parameters("B-ablation", {"run_dir": "/tmp/x"}, {})


def test_override_wins_over_profile():
    got = run.resolve_parameters("A-train", {"epochs": 3, "lr": 0.1}, {"epochs": 7})
    assert got == {"epochs": 7, "lr": 0.1}


def test_unknown_notebook_and_profile():
    with pytest.raises(run.RunnerError, match="Notebooks: A-train"):
        run.notebook_path("A-tran")
    with pytest.raises(run.RunnerError, match="auto, smoke, quick, full"):
        run.choose_profile("fast")


def test_parse_value_reads_yaml():
    assert run.parse_value("3") == 3
    assert run.parse_value("[a, b]") == ["a", "b"]
    assert run.parse_value("null") is None and run.parse_value("true") is True
    assert run.parse_value("resnet18") == "resnet18"


def test_auto_profile_is_quick_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr("hw2lib.core.runtime.default_device", lambda: torch.device("cpu"))
    prof, why = run.choose_profile("auto")
    assert prof == "quick" and "no CUDA" in why


def test_profile_file_with_unknown_notebook(tmp_path):
    (tmp_path / "smoke.yaml").write_text("A-train: {}\nD-extra: {}\n")
    with pytest.raises(run.RunnerError, match="D-extra"):
        run.load_profile("smoke", tmp_path)


def test_out_refuses_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(run.RunnerError, match="not empty and is not an hw2 report folder"):
        run.prepare_out(tmp_path)
    assert cli.main(["report", "--profile", "smoke", "--out", "/", "--only", "A-train"]) == 2
    empty = tmp_path / "new"
    assert run.prepare_out(empty) == empty.resolve() and (empty / run.REPORT_MARKER).exists()
    assert run.prepare_out(empty) == empty.resolve()  # a report folder may be written again


def _status(out, name, status, **kw):
    rec = {"notebook": name, "status": status, "duration_s": 1.0, "html": f"{name}.html",
           "executed": None, "run_dir": f"runs/{name}", "params": {}, "error": None,
           "started": "", "profile": "smoke", "previous_html": None, **kw}
    run.write_status(out, rec)


def test_a_corrupt_status_file_is_named_moved_aside_and_rebuilt(tmp_path):
    (tmp_path / "status.json").write_text('{"A-train": {"stat')
    status, notice = run.read_status(tmp_path)
    assert status == {} and "status file" in notice and "is corrupt" in notice
    assert list(tmp_path.glob("status.corrupt-*.json"))
    _status(tmp_path, "A-train", "passed")
    assert run.read_status(tmp_path)[0]["A-train"]["status"] == "passed"


def _results(out, name, **content):
    (out / "runs" / name).mkdir(parents=True, exist_ok=True)
    (out / "runs" / name / "results.json").write_text(json.dumps(content))


def test_a_vis_does_not_run_after_a_failed_a_train(tmp_path):
    _status(tmp_path, "A-train", "failed", error="boom")
    _results(tmp_path, "A-train", run_id="aaaa1111", checkpoint="x")  # an old, stale results file
    extra, why, ids = run.dependency_inputs("A-vis", tmp_path, run.read_status(tmp_path)[0])
    assert "A-train failed" in why and ids == {}
    assert extra["train_results"].endswith("runs/A-train/results.json")


def _fake_run_notebook(calls):
    def fake(name, profile, params, out, **kw):
        calls.append((name, params))
        if name == "A-train":
            _results(out, "A-train", run_id=params.get("lr_tag", "r1"), checkpoint="c.pt")
        if name == "A-vis":
            rid = json.loads((out / "runs/A-train/results.json").read_text())["run_id"]
            _results(out, "A-vis", inputs={"A-train": {"run_id": rid}})
        rec = run.RunResult(name, "passed", 0.1, f"{name}.html", None, f"runs/{name}", params,
                            profile=profile)
        run.write_status(out, rec.__dict__)
        return rec
    return fake


def test_a_vis_reruns_when_a_train_changed_and_skips_when_it_did_not(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run, "run_notebook", _fake_run_notebook(calls))
    run.report("smoke", tmp_path, ["A-train", "A-vis"])
    assert [c[0] for c in calls] == ["A-train", "A-vis"]
    run.report("smoke", tmp_path, ["A-vis"])  # nothing changed: skipped
    assert len(calls) == 2
    _results(tmp_path, "A-train", run_id="r2", checkpoint="c.pt")  # A-train retrained elsewhere
    run.report("smoke", tmp_path, ["A-vis"])
    assert [c[0] for c in calls] == ["A-train", "A-vis", "A-vis"]


def test_the_index_is_written_after_an_interrupt(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.report("smoke", tmp_path, ["A-train"])
    assert (tmp_path / "index.html").exists()


def test_index_shows_status_headline_run_ids_and_warnings(tmp_path):
    _status(tmp_path, "A-train", "passed", params={"epochs": 2})
    _status(tmp_path, "A-vis", "failed", error="ValueError: boom", previous_html="A-vis.passed.html")
    _results(tmp_path, "A-train", headline=[{"name": "val accuracy", "value": 0.91234,
                                              "reference": 0.963, "note": "x",
                                              "run_id": "ab12cd34"}],
             warnings=["trained from RANDOM INITIALIZATION"],
             environment={"torch": "2.14.1", "device": "cpu"})
    (tmp_path / "runs/C-longtail").mkdir(parents=True)
    (tmp_path / "runs/C-longtail/results.json").write_text("{not json")
    status, _ = run.read_status(tmp_path)
    page = index.write_index(tmp_path, "smoke", status).read_text()
    assert "0.9123" in page and "0.9630" in page and "ab12cd34" in page
    assert "class=failed>failed" in page and "ValueError: boom" in page
    assert "last passed page" in page and "A-vis.passed.html" in page
    assert "RANDOM INITIALIZATION" in page and "class=warn" in page
    assert "<a href='A-train.html'>A-train</a>" in page
    assert "B-ablation</td><td class=missing>not run" in page
    assert "2.14.1" in page
    assert "C-longtail:</b> results file" in page and "is corrupt" in page


def test_cli_unknown_parameter_exits_2(capsys):
    assert cli.main(["run", "A-train", "--profile", "smoke", "-p", "nope", "1",
                     "--out", "/tmp/hw2-never-written"]) == 2
    assert "unknown parameter 'nope'" in capsys.readouterr().err
