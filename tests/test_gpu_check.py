"""An NVIDIA device torch cannot use (hw2lib.core.gpu_check): found without torch, named with the driver
and torch's CUDA, and a loud stop of `hw2 report --profile auto` (override: $HW2_ALLOW_CPU=1).
Fed fake inputs: no GPU is needed. The last test is the real check on the machine at hand."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from hw2lib.cli import main
from hw2lib.core import gpu_check as G
from hw2lib.report import run as R

PROC = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82.01  Wed Oct 27 15:15:53 UTC 2021\n"
        "GCC version:  gcc version 9.3.0 (Ubuntu 9.3.0-17ubuntu1~20.04)\n")
SMI = "Tesla T4, 470.82.01, 15109 MiB\nTesla T4, 470.82.01, 15109 MiB\n"
OLD_BOX = {"present": True, "driver": "470.82.01", "gpus": G.parse_smi(SMI), "source": []}
CU130 = {"torch": "2.14.1+cu130", "cuda": "13.0", "available": False, "device_count": 0}


def test_driver_and_gpus_are_read_without_torch():
    assert G.driver_from_proc(PROC) == "470.82.01"
    assert G.driver_from_proc("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  "
                              "580.65.06  Release Build") == "580.65.06"
    assert G.driver_from_proc("") is None and G.driver_from_proc(None) is None
    assert G.parse_smi(SMI) == [{"name": "Tesla T4", "driver": "470.82.01", "memory": "15109 MiB"}] * 2
    assert G.parse_smi("") == []


def test_probe_reads_the_proc_file_and_nvidia_smi(tmp_path, monkeypatch):
    proc = tmp_path / "version"
    proc.write_text(PROC)
    found = G.probe_nvidia(proc, smi=None)
    assert found["present"] and found["driver"] == "470.82.01" and found["gpus"] == []
    assert not G.probe_nvidia(tmp_path / "absent", smi=None)["present"]
    # a fake nvidia-smi on the PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf 'Tesla T4, 470.82.01, 15109 MiB\\n'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    both = G.probe_nvidia(tmp_path / "absent")
    assert both["present"] and both["gpus"][0]["name"] == "Tesla T4"
    assert both["driver"] == "470.82.01" and both["source"] == ["nvidia-smi"]
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")  # tools, no device
    assert not G.probe_nvidia(tmp_path / "absent")["present"]


def test_message_names_driver_gpu_torch_cuda_and_the_way_out():
    msg = G.unusable_gpu_message(OLD_BOX, CU130)
    for part in ("Tesla T4, Tesla T4", "driver 470.82.01", "torch 2.14.1+cu130",
                 "torch.cuda.is_available() is False", "built with CUDA 13.0",
                 "needs driver ≥ 580.65.06", "too old", "HW2_ALLOW_CPU=1"):
        assert part in msg, part
    # the fix for an old driver: the pinned torch from the index of a CUDA that driver runs
    assert "make report TORCH_INDEX=https://download.pytorch.org/whl/cu118" in msg
    cuda12_box = G.unusable_gpu_message({**OLD_BOX, "driver": "535.104.05"}, CU130)
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cu126" in cuda12_box
    assert G.wheel_fix("418.1").startswith("update the NVIDIA driver")
    cpu_wheel = G.unusable_gpu_message(OLD_BOX, {**CU130, "torch": "2.14.1+cpu", "cuda": None})
    assert "CPU-only build" in cpu_wheel and "HW2_ALLOW_CPU=1" in cpu_wheel
    new_driver = G.unusable_gpu_message({**OLD_BOX, "driver": "590.10"}, CU130)
    assert "too old" not in new_driver and "CUDA_VISIBLE_DEVICES" in new_driver
    assert G.unusable_gpu_message(OLD_BOX, {**CU130, "available": True}) is None
    assert G.unusable_gpu_message({"present": False, "driver": None, "gpus": []}, CU130) is None
    assert G.check(OLD_BOX, {**CU130, "available": True}) is None
    assert G.check(OLD_BOX, CU130) == msg


def test_report_auto_stops_on_an_unusable_gpu_unless_overridden(tmp_path, monkeypatch, capsys):
    msg = G.unusable_gpu_message(OLD_BOX, CU130)
    monkeypatch.setattr(R.gpu_check, "check", lambda: msg)
    monkeypatch.setattr("hw2lib.core.runtime.default_device", lambda: torch.device("cpu"))
    monkeypatch.delenv(G.ALLOW_ENV, raising=False)
    with pytest.raises(R.RunnerError, match="driver 470.82.01"):
        R.choose_profile("auto")
    assert main(["report", "--profile", "auto", "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "error: Tesla T4" in err and "CUDA 13.0" in err
    assert not (tmp_path / "rep").exists()  # stopped before anything was written
    assert R.choose_profile("smoke")[0] == "smoke"  # an explicit profile is not auto's guess
    monkeypatch.setenv(G.ALLOW_ENV, "1")
    assert R.choose_profile("auto")[0] == "quick"
    assert "warning: Tesla T4" in capsys.readouterr().err
    monkeypatch.setenv(G.ALLOW_ENV, "0")
    with pytest.raises(R.RunnerError):
        R.choose_profile("auto")


@pytest.mark.cuda
def test_an_nvidia_device_here_is_usable_by_torch():
    """On this machine: an NVIDIA device torch cannot use fails the CUDA tests with the reason
    (they would all be skipped otherwise). $HW2_ALLOW_CPU=1 accepts a CPU run."""
    msg = G.check()
    if msg and not G.cpu_allowed():
        pytest.fail(msg)
