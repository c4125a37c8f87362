"""Runner and index logic that needs no kernel."""

import json

import pytest

from hw2lib import cli, run


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
    assert run.parse_value("1e-3") == "1e-3" or run.parse_value("1e-3") == 0.001
    assert run.parse_value("[a, b]") == ["a", "b"]
    assert run.parse_value("null") is None
    assert run.parse_value("true") is True
    assert run.parse_value("resnet18") == "resnet18"


def test_auto_profile_is_quick_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    prof, why = run.choose_profile("auto")
    assert prof == "quick" and "no CUDA" in why


def test_profile_file_with_unknown_notebook(tmp_path):
    (tmp_path / "smoke.yaml").write_text("A-train: {}\nD-extra: {}\n")
    with pytest.raises(run.RunnerError, match="D-extra"):
        run.load_profile("smoke", tmp_path)


def test_index_shows_status_headline_and_warnings(tmp_path):
    res = run.RunResult("A-train", "passed", 12.0, "A-train.html", "executed/A-train.ipynb",
                        "runs/A-train", {"epochs": 2}, profile="smoke")
    bad = run.RunResult("A-vis", "failed", 3.0, "A-vis.html", None, "runs/A-vis", {},
                        "ValueError: boom", profile="smoke")
    run._write_status(tmp_path, res)
    run._write_status(tmp_path, bad)
    (tmp_path / "runs/A-train").mkdir(parents=True)
    (tmp_path / "runs/A-train/results.json").write_text(json.dumps({
        "headline": [{"name": "val accuracy", "value": 0.91234, "reference": 0.963, "note": "x"}],
        "warnings": ["trained from RANDOM INITIALIZATION"],
        "environment": {"torch": "2.14.1", "device": "cpu"}}))
    page = run.write_index(tmp_path, "smoke").read_text()
    assert "0.9123" in page and "0.9630" in page
    assert "class=failed>failed" in page and "ValueError: boom" in page
    assert "RANDOM INITIALIZATION" in page and "class=warn" in page
    assert "<a href='A-train.html'>A-train</a>" in page
    assert "B-ablation</td><td class=missing>not run" in page
    assert "2.14.1" in page


def test_cli_unknown_parameter_exits_2(capsys):
    assert cli.main(["run", "A-train", "--profile", "smoke", "-p", "nope", "1",
                     "--out", "/tmp/hw2-never-written"]) == 2
    assert "unknown parameter 'nope'" in capsys.readouterr().err
