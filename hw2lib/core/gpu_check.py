"""An NVIDIA GPU that torch cannot use: found, named, and a loud stop instead of a silent CPU run.

A box with an NVIDIA device whose driver is too old for the CUDA the torch wheel was built with
(or a CPU-only torch wheel) reports `torch.cuda.is_available() == False`; `hw2 report --profile
auto` would then quietly run `quick` on the CPU and every CUDA test would be skipped. Here the
device is looked for outside torch — `/proc/driver/nvidia/version` (the kernel module) and
`nvidia-smi` — and when one is there and torch cannot use it, `unusable_gpu_message` says so,
naming the driver, the GPU, torch and its CUDA version and what to do.

`$HW2_ALLOW_CPU=1` is the override: go on on the CPU anyway (the message is then a warning).
The detection functions take their inputs as arguments, so they are tested with fake ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ALLOW_ENV = "HW2_ALLOW_CPU"
PROC_VERSION = Path("/proc/driver/nvidia/version")
# The oldest Linux driver each CUDA major version runs on (minor-version compatibility), from
# NVIDIA's CUDA toolkit release notes.
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def driver_from_proc(text: str | None) -> str | None:
    """The kernel module's version from /proc/driver/nvidia/version's text, e.g.
    'NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82.01  Wed Oct 27 …' → '470.82.01'."""
    if not text:
        return None
    m = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+(?:\.\d+)+)", text)
    if m:
        return m.group(1)
    m = re.search(r"NVRM version:.*?(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else None


def parse_smi(text: str | None) -> list[dict]:
    """GPUs from `nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader`."""
    gpus = []
    for line in (text or "").strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0]:
            gpus.append({"name": parts[0], "driver": parts[1],
                         "memory": parts[2] if len(parts) > 2 else None})
    return gpus


def probe_nvidia(proc_path: Path = PROC_VERSION, smi: str | None = "nvidia-smi",
                 timeout: float = 10.0) -> dict:
    """What this machine shows of an NVIDIA device without torch: {"present", "driver", "gpus",
    "source"}. Reads `proc_path` and runs `smi` (when it is on the PATH); never raises."""
    proc_text = None
    try:
        proc_text = Path(proc_path).read_text()
    except OSError:
        pass
    gpus: list[dict] = []
    smi_path = shutil.which(smi) if smi else None
    if smi_path:
        try:
            out = subprocess.run([smi_path, "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=timeout)
            gpus = parse_smi(out.stdout) if out.returncode == 0 else []
        except (OSError, subprocess.SubprocessError):
            gpus = []
    driver = driver_from_proc(proc_text) or (gpus[0]["driver"] if gpus else None)
    sources = [s for s, ok in ((str(proc_path), proc_text is not None), ("nvidia-smi", bool(gpus)))
               if ok]
    return {"present": proc_text is not None or bool(gpus), "driver": driver,
            "gpus": gpus, "source": sources}


def torch_cuda() -> dict:
    """torch's side: its version, the CUDA it was built with (None: a CPU-only wheel), whether it
    can use a device and how many it sees."""
    import torch

    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "available": torch.cuda.is_available(),
            "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0}


def _version(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v or ""))


def unusable_gpu_message(nvidia: dict, tc: dict) -> str | None:
    """None when there is no NVIDIA device or torch can use it; otherwise what is wrong (driver,
    GPU, torch and its CUDA) and what to do."""
    if tc["available"] or not nvidia["present"]:
        return None
    gpu = ", ".join(g["name"] for g in nvidia["gpus"]) or "an NVIDIA device"
    driver = nvidia["driver"] or "unknown (nvidia-smi gave none)"
    head = (f"{gpu} is here (NVIDIA driver {driver}) but torch {tc['torch']} cannot use it: "
            "torch.cuda.is_available() is False")
    if tc["cuda"] is None:
        why = ("this torch is a CPU-only build (torch.version.cuda is None): install a CUDA "
               "build of torch")
    else:
        major = _version(tc["cuda"])[:1]
        need = MIN_DRIVER.get(major[0]) if major else None
        why = f"torch was built with CUDA {tc['cuda']}"
        if need and nvidia["driver"] and _version(nvidia["driver"]) < _version(need):
            why += (f", which needs driver ≥ {need}: the driver is too old. Update the driver, "
                    f"or {wheel_fix(nvidia['driver'])}")
        elif need:
            why += (f" (needs driver ≥ {need}); check that the device is visible "
                    "(CUDA_VISIBLE_DEVICES, the container's --gpus) and that nvidia-smi works")
        else:
            why += "; check the driver against that CUDA version (nvidia-smi)"
    return (f"{head}; {why}. To go on on the CPU anyway, set {ALLOW_ENV}=1 (the run is then a CPU "
            "run, profile 'quick' under auto).")


# PyTorch's wheel indexes by the CUDA they are built for, newest first, with the oldest driver
# each runs on (minor-version compatibility: any CUDA 12 build runs on a 525 driver).
WHEEL_INDEXES = (("cu130", "580.65.06"), ("cu126", "525.60.13"), ("cu118", "450.80.02"))


def wheel_fix(driver: str) -> str:
    """What to install on a box with `driver`: the newest PyTorch index that runs there, through
    `make`'s TORCH_INDEX (the pinned versions, built for that CUDA)."""
    for tag, need in WHEEL_INDEXES:
        if _version(driver) >= _version(need):
            return (f"keep the pins and take torch built for {tag}: rm -rf .venv && make report "
                    f"TORCH_INDEX=https://download.pytorch.org/whl/{tag} (or pip install torch "
                    f"torchvision --index-url https://download.pytorch.org/whl/{tag})")
    return "update the NVIDIA driver: no PyTorch CUDA build runs on it"


def cpu_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip().lower() not in ("", "0", "false", "no")


def check(nvidia: dict | None = None, tc: dict | None = None) -> str | None:
    """The message of `unusable_gpu_message` for this machine (probing what is not given), or None."""
    tc = tc if tc is not None else torch_cuda()
    if tc["available"]:
        return None
    return unusable_gpu_message(nvidia if nvidia is not None else probe_nvidia(), tc)
