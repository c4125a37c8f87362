"""`hw2 doctor`: on this CPU it runs in its tiny mode (the CI check that it cannot rot before a GPU
is at hand) and writes doctor.json and doctor.md with every part; its pieces on fake inputs."""

from __future__ import annotations

import json

import pytest
import torch

from hw2lib.cli import build_parser, main
from hw2lib.gpu import doctor as DR
from hw2lib.report.plan import plan

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_cuda" name="test_a" time="0.1"/>
<testcase classname="tests.test_cuda" name="test_b" time="0.1">
  <failure message="AssertionError: syncs&#10;more">trace</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c" time="0"><skipped message="no CUDA"/></testcase>
<testcase classname="tests.test_gpu_check" name="test_d" time="0"><error message="boom"/></testcase>
</testsuite></testsuites>"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny mode is the CPU's")
def test_doctor_tiny_mode_writes_both_files(tmp_path, capsys):
    out = tmp_path / "doctor"
    assert main(["doctor", "--out", str(out)]) == 0
    rep = json.loads((out / "doctor.json").read_text())
    md = (out / "doctor.md").read_text()
    assert rep["mode"] == "tiny" and not any("error" in rep[k] for k in
                                             ("tests", "bench", "train", "plan"))
    env = rep["environment"]
    assert env["torch"] == torch.__version__ and env["cores"] >= 1 and not env["cuda_available"]
    assert env["cpu_precision"]["precision"] == "fp32"  # the suite pins it (conftest)
    # the CUDA-marked tests ran in a subprocess: here only the unusable-GPU check passes
    t = rep["tests"]
    assert t["ran"] and t["failed"] == t["errors"] == 0 and t["passed"] >= 1
    assert t["skipped"] >= 1  # the CUDA tests themselves, without a GPU
    (row,) = rep["bench"]["table"]
    assert (row["model"], row["variant"]) == ("resnet18", "fp32")
    assert row["results"]["raw"]["images_per_s"] > 0
    assert [p["copies"] for p in rep["bench"]["pack"]] == [2]
    tr = rep["train"]
    assert tr["epochs"] == 1 and tr["recipe"]["mix"] == "both" and tr["recipe"]["tta"]
    assert 0 <= tr["val_acc"] <= 1 and 0 <= tr["test_acc"] <= 1 and tr["syncs"] is None
    pt = rep["plan"]
    assert pt["profile"] == "smoke" and pt["trainings"] == len(plan("smoke"))
    assert pt["serial_seconds"] > 0 and pt["unknown"] == 0
    assert sum(s["trainings"] for s in pt["by_notebook"].values()) == pt["trainings"]
    # the page says what the JSON holds
    assert "# hw2 doctor — tiny mode" in md and "synthetic data" in md
    assert f"{t['passed']} passed, 0 failed" in md
    assert f"| resnet18:imagenet@16 | fp32 | {row['results']['raw']['images_per_s']:.1f} |" in md
    assert f"val {tr['val_acc']:.4f}, test {tr['test_acc']:.4f}" in md
    assert "host syncs not counted on the CPU" in md
    n_b = sum(r["notebook"] == "B-ablation" for r in plan("smoke"))
    assert f"{pt['trainings']} trainings:" in md and f"| B-ablation | {n_b} |" in md
    assert "wrote" in capsys.readouterr().out


def test_junit_counts_and_failures(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT)
    res = DR.parse_junit(path)
    assert {k: res[k] for k in ("passed", "failed", "errors", "skipped")} == {
        "passed": 1, "failed": 1, "errors": 1, "skipped": 1}
    assert res["failures"] == [{"test": "tests.test_cuda::test_b", "message": "AssertionError: syncs"},
                               {"test": "tests.test_gpu_check::test_d", "message": "boom"}]


def test_sync_count_is_none_off_cuda():
    with DR.count_syncs("cpu") as box:
        torch.ones(3).sum().item()
    assert box["count"] is None


def test_page_puts_an_unusable_gpu_and_failed_parts_on_top(tmp_path):
    env = {"nvidia": {"driver": "470.82.01", "gpus": [{"name": "Tesla T4", "memory": "15 GiB"}]},
           "unusable_gpu": "Tesla T4 is here (NVIDIA driver 470.82.01) but torch cannot use it",
           "torch": "2.14.1", "torch_cuda": "13.0", "device_name": "cpu", "device": "cpu",
           "cores": 8, "cpu_threads": 8, "python": "3.12", "platform": "Linux"}
    rep = {"mode": "tiny", "finished": "now", "environment": env, "seconds": 1.0,
           "tests": {"ran": False, "reason": "pytest is not installed in this Python"},
           "bench": {"error": "RuntimeError: a packed copy failed"}, "train": None, "plan": None}
    md = DR.markdown(rep)
    assert md.index("**NVIDIA device unusable by torch:** Tesla T4 is here") < md.index(
        "## Environment")
    assert "| NVIDIA driver | 470.82.01 |" in md and "Tesla T4 (15 GiB)" in md
    assert "pytest is not installed" in md
    assert "**failed:** RuntimeError: a packed copy failed" in md
    assert md.count("skipped") == 2  # train and plan


def test_cli_subcommand_and_its_errors(capsys):
    args = build_parser().parse_args(["doctor", "--skip", "tests", "bench", "--epochs", "2",
                                      "--out", "x"])
    assert args.func.__name__ == "_cmd_doctor" and args.skip == ["tests", "bench"]
    assert args.epochs == 2 and args.mode == "auto"
    assert main(["doctor", "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["doctor", "--mode", "gpu", "--skip", "tests", "bench", "train", "plan"]) == 2
        assert "--mode gpu but torch cannot use a CUDA device here" in capsys.readouterr().err
