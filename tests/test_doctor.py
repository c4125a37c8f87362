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
def test_doctor_tiny_mode_writes_both_files_within_its_deadline(tmp_path, capsys):
    out = tmp_path / "doctor"
    assert main(["doctor", "--out", str(out)]) == 0
    rep = json.loads((out / "doctor.json").read_text())
    md = (out / "doctor.md").read_text()
    ran = ("tests", "bench", "pack", "train", "precision", "plan")
    assert rep["mode"] == "tiny" and not any("error" in rep[k] for k in ran)
    # every stage within its share of the deadline, the whole within the deadline
    assert rep["seconds"] <= rep["deadline"] == 240
    for k in ran:
        s = rep["stage_seconds"][k]
        assert s["seconds"] <= s["budget"] + 5, (k, s)
    assert {s["stage"] for s in rep["skipped"]} == {"smoke", "suite"}  # make test runs both
    env = rep["environment"]
    assert env["torch"] == torch.__version__ and env["cores"] >= 1 and not env["cuda_available"]
    assert env["cpu_precision"]["precision"] == "fp32"  # the suite pins it (conftest)
    assert [w["model"] for w in env["imagenet_weights"]] == ["resnet50", "resnet18"]
    # the CUDA test files ran in a subprocess: here only the unusable-GPU check passes
    t = rep["tests"]
    assert t["ran"] and t["failed"] == t["errors"] == 0 and t["passed"] >= 1
    assert t["skipped"] >= 1 and "tests/test_cuda.py tests/test_gpu_check.py" in t["command"]
    (row,) = rep["bench"]["table"]
    assert (row["model"], row["variant"]) == ("resnet18", "fp32")
    raw = row["results"]["raw"]
    assert raw["images_per_s"] > 0 and 0 < raw["host_ms_per_step"] and not row["launch_bound"]
    assert [p["copies"] for p in rep["pack"]["plain"]] == [2]
    tr = rep["train"]
    assert tr["epochs"] == 1 and tr["recipe"]["mix"] == "both" and tr["recipe"]["tta"]
    assert tr["recipe"]["warmup_epochs"] == 1  # the recipe's 5 scaled to the epochs
    assert 0 <= tr["val_acc"] <= 1 and 0 <= tr["test_acc"] <= 1
    sr = tr["step_reads"]  # training steps only: no checkpoint write, no loss check, no eval
    assert sr["syncs"] is None and sr["counted_steps"] == 5 and sr["host_reads_per_step"] < 1
    assert tr["checkpoint_bytes"]["best.pt"] > 0
    pr = rep["precision"]
    assert set(pr) >= {"bf16", "fp32"} and pr["bf16_minus_fp32_test"]["p"] <= 1
    pt = rep["plan"]
    assert pt["profile"] == "smoke" and pt["trainings"] == len(plan("smoke"))
    assert pt["serial_seconds"] > 0 and pt["unknown"] == 0
    assert sum(s["trainings"] for s in pt["by_notebook"].values()) == pt["trainings"]
    assert all(q["checkpoint_write_s"] > 0 and q["eval_batch"] == 4 for q in pt["probes"])
    # the page says what the JSON holds
    assert "# hw2 doctor — tiny mode" in md and "synthetic data" in md
    assert f"{t['passed']} passed, 0 failed" in md
    assert f"| resnet18:imagenet@16 | fp32 | {raw['images_per_s']:.1f} |" in md
    assert f"val {tr['val_acc']:.4f}, test {tr['test_acc']:.4f}" in md
    assert "Training steps only (5 steps, numbers 0–4)" in md and "The model: seconds = " in md
    assert "- smoke (a smoke report on this device): tiny mode" in md
    n_b = sum(r["notebook"] == "B-ablation" for r in plan("smoke"))
    assert f"{pt['trainings']} trainings:" in md and f"| B-ablation | {n_b} |" in md
    assert "wrote" in capsys.readouterr().out


def test_the_deadline_skips_a_stage_it_cannot_hold_and_says_so():
    clock = DR.Deadline(100, gpu=True, stages=["bench", "smoke"])
    assert clock.share("bench") == pytest.approx(20, abs=0.5)  # 20 % of 100 s
    clock.t0 -= 95  # 5 s left
    rep = {"skipped": [], "stage_seconds": {}}
    DR._stage(rep, clock, "smoke", lambda budget: pytest.fail("must not run"))
    assert rep["skipped"][0]["stage"] == "smoke" and "it needs ≥ 60 s" in rep["skipped"][0]["why"]


def test_the_step_count_covers_training_steps_only():
    """Host reads inside train_step are counted over the window; one outside (a checkpoint
    write, a loss check) is not."""
    from hw2lib.gpu import measure as M
    from hw2lib.train import engine as E

    def fake_step(x):
        return x.sum().item() + float(x.max())  # two reads a step

    real = E.train_step
    E.train_step = fake_step
    try:
        with M.count_step_reads("cpu", (1, 3)) as box:
            for _ in range(4):
                E.train_step(torch.ones(3))
            torch.ones(2).sum().item()  # outside a step
    finally:
        E.train_step = real
    assert box["counted_steps"] == 2 and box["host_reads"] == 4 and box["steps"] == 4


def test_junit_counts_and_failures(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT)
    res = DR.parse_junit(path)
    assert {k: res[k] for k in ("passed", "failed", "errors", "skipped")} == {
        "passed": 1, "failed": 1, "errors": 1, "skipped": 1}
    assert res["failures"] == [{"test": "tests.test_cuda::test_b", "message": "AssertionError: syncs"},
                               {"test": "tests.test_gpu_check::test_d", "message": "boom"}]


def test_page_puts_an_unusable_gpu_and_failed_parts_on_top(tmp_path):
    env = {"nvidia": {"driver": "470.82.01", "gpus": [{"name": "Tesla T4", "memory": "15 GiB"}]},
           "unusable_gpu": "Tesla T4 is here (NVIDIA driver 470.82.01) but torch cannot use it",
           "torch": "2.14.1", "torch_cuda": "13.0", "device_name": "cpu", "device": "cpu",
           "cores": 8, "cpu_threads": 8, "python": "3.12", "platform": "Linux"}
    rep = {"mode": "tiny", "finished": "now", "environment": env, "seconds": 1.0,
           "tests": {"ran": False, "reason": "pytest is not installed in this Python"},
           "bench": {"error": "RuntimeError: a packed copy failed"}, "train": None, "plan": None,
           "deadline": 240.0, "stage_seconds": {"bench": {"seconds": 3.0, "budget": 24.0}},
           "skipped": [{"stage": "plan", "what": "hw2 plan --time", "why": "5 s left"}]}
    md = DR.markdown(rep)
    assert md.index("**NVIDIA device unusable by torch:** Tesla T4 is here") < md.index(
        "## Environment")
    assert "| NVIDIA driver | 470.82.01 |" in md and "Tesla T4 (15 GiB)" in md
    assert "pytest is not installed" in md
    assert "**failed:** RuntimeError: a packed copy failed" in md
    assert md.count("\nskipped\n") == 4  # pack, train, precision and plan: no result
    assert "- plan (hw2 plan --time): 5 s left" in md and "| bench | 3 | 24 |" in md


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
