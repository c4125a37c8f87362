"""`full` rehearsed on the CPU (issue 28): `hw2 report --profile full --rehearse` runs every
training of `hw2 plan --profile full` — each cut to one step of a handful of images — and renders
every page, so a crash in a path only `full` takes is found before any GPU time is spent; and
under `full` a missing GPU is an error, never a silent CPU run."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from hw2lib.cli import main
from hw2lib.core import gpu_check
from hw2lib.report import run
from hw2lib.report.plan import plan
from hw2lib.report.rehearsal import rehearsal_failures
from hw2lib.train.executor import run_resources
from tests.conftest import EUROSAT_NAMES, write_imagefolder

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    base = tmp_path_factory.mktemp("rehearsal")
    # enough images for the report's long tail (PermanentCrop keeps 36 training images)
    images = write_imagefolder(base / "images", EUROSAT_NAMES, per_class=70, size=32, seed=5)
    out = base / "out"
    rc = main(["report", "--profile", "full", "--rehearse", "-p", "image_folder", str(images),
               "-p", "image_size", "32", "-p", "data_dir", str(base / "data"), "--out",
               str(out)])
    return rc, out


def test_the_rehearsal_runs_every_training_of_full_and_renders_every_page(rehearsal, capsys):
    rc, out = rehearsal
    assert rc == 0
    status = json.loads((out / "status.json").read_text())
    assert {nb: s["status"] for nb, s in status.items()} == dict.fromkeys(run.NOTEBOOKS, "passed")
    for nb in run.NOTEBOOKS:
        assert (out / f"{nb}.html").stat().st_size > 10_000, nb
    trained = Counter()
    for path in (out / "runs").glob("*/*/result.json"):
        res = json.loads(path.read_text())
        trained[(path.parent.parent.name, res["config"]["name"], res["config"]["seed"])] += 1
        assert res["epochs_run"] == 1 and res["identity"]["max_steps"] == 1
        assert res["identity"]["precision"] == "fp32"  # the CPU, on purpose
    planned = Counter((r["notebook"], r["name"], r["seed"]) for r in plan("full"))
    assert trained == planned and sum(planned.values()) == len(plan("full"))
    assert not list((out / "runs").glob("*/*/*.pt"))  # a rehearsal's GBs of checkpoints went
    assert rehearsal_failures(out, list(run.NOTEBOOKS)) == []


def test_full_without_a_gpu_is_an_error_not_a_cpu_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("hw2lib.core.runtime.default_device", lambda: torch.device("cpu"))
    monkeypatch.delenv(gpu_check.ALLOW_ENV, raising=False)
    with pytest.raises(run.RunnerError, match="profile 'full' needs a usable GPU"):
        run.choose_profile("full")
    assert main(["report", "--profile", "full", "--out", str(tmp_path / "r")]) == 2
    assert "--rehearse runs every training of full cut to a step" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert run.choose_profile("full", cpu_ok=True)[0] == "full"  # -p device cpu, the plan
    assert main(["plan", "--profile", "full"]) == 0
    monkeypatch.setenv(gpu_check.ALLOW_ENV, "1")
    assert run.choose_profile("full")[0] == "full"


def test_a_notebook_under_full_does_not_fall_back_to_the_cpu(monkeypatch, tmp_path):
    from hw2lib.study import notebook

    monkeypatch.setattr("hw2lib.core.runtime.default_device", lambda: torch.device("cpu"))
    monkeypatch.delenv(gpu_check.ALLOW_ENV, raising=False)
    with pytest.raises(RuntimeError, match="profile 'full' needs a usable GPU and device='auto'"):
        notebook.setup(tmp_path / "run", seed=0, profile="full", image_folder=str(tmp_path))
    assert not (tmp_path / "run").exists()  # stopped before any folder or data


def test_a_ray_cluster_without_a_gpu_is_an_error_under_full():
    cpus = [{"CPU": 8.0}]
    with pytest.raises(ValueError, match="has no GPU.*device='cpu'"):
        run_resources(cpus, 0.25, 2, require_gpu=True)
    assert run_resources(cpus, 0.25, 2)[2] == "CPU workers, 2 thread(s) per run"
    assert run_resources([{"CPU": 8.0, "GPU": 1.0}], 0.25, 2, require_gpu=True)[0] == {
        "num_gpus": 0.25, "num_cpus": 2}
