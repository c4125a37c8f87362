"""`hw2 doctor` (`make gpu-check`): one call, bounded by a deadline, that measures what the GPU
path needs — for the day a GPU is at hand — and writes `reports/doctor/doctor.json` + `doctor.md`.

Its stages, in order, each with a share of the deadline (`--deadline`, default 540 s on a GPU:
within 10 min on one H100 by design); a stage the time left cannot hold is skipped and the page
says so, one that runs out of its share is trimmed and the page lists what it left out:

1. environment — NVIDIA driver and GPUs (seen without torch, `gpu_check`), torch and its CUDA,
   cuDNN, the device, cores, whether the ImageNet weights are in the torch hub cache; a
   driver/wheel mismatch is named at the top with its fix;
2. the CUDA-marked tests (`pytest -m cuda` on the CUDA test files only: a package other tests need
   cannot stop it; it needs torch and pytest);
3. `hw2 bench train` over the study's models × {fp32, bf16, bf16 + channels_last} (+ compiled for
   the models that carry the study), each with the host's share of a step (launch-bound or not);
4. packing 1/2/4 copies of the launch-bound ResNeXt-18 on one GPU, with and without CUDA MPS;
5. one Track-2 best-recipe training (`engine.fit`, the recipe of `hw2 plan`'s `best`, its warm-up
   scaled to the epochs): images/s, val/test accuracy, the host syncs of its training steps
   (`gpu.measure.count_step_reads`), its checkpoints' disk use;
6. the same training in float32: bf16 against float32 accuracy on this GPU;
7. `hw2 plan --profile full --time` (each recipe probed through fit at the real checkpoint
   cadence and evaluation batch, its peak GPU memory) beside the plan at the bench's rates;
8. a `smoke` report on this device (papermill, feature visualization, t-SNE, cRT, Ray with GPUs);
9. the whole test suite (`make test`'s pytest), run in the background from the start on few CPU
   threads, collected at the deadline.

Without a usable GPU it runs in a tiny mode (tiny models, synthetic data, single steps; the
`smoke` plan; no smoke report and no suite: `make test` runs both), so that it cannot rot before
it is needed (a CI test runs it). It needs only torch and this source tree: `PYTHONPATH=. python
-m hw2lib.cli doctor` works with any torch ≥ 2.4 (the bench and the estimate live in bench/).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hw2lib.core import io, paths
from hw2lib.gpu.doctor_page import markdown
from hw2lib.gpu.measure import parse_junit, write_synthetic

REPO_ROOT = paths.SOURCE_ROOT
DEFAULT_OUT = REPO_ROOT / "reports" / "doctor"
# The GPU bench: every study model in three variants; compiled only for the two models that carry
# most of the `full` study's image-steps (compile time dominates the rest of the bench).
GPU_VARIANTS = ("fp32", "bf16", "bf16_cl")
COMPILED_MODELS = ("resnet18:small", "resnext18")
TRACK2_MODEL = "resnet18:small"


def parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The options of `hw2 doctor` (also the parent of the CLI's subcommand)."""
    p = argparse.ArgumentParser(prog="hw2 doctor", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                add_help=add_help)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder of doctor.json/doctor.md")
    p.add_argument("--mode", choices=("auto", "tiny", "gpu"), default="auto",
                   help="auto: gpu where CUDA is usable, else tiny (on the CPU)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the Track-2 training (default 3 on the GPU, 1 tiny)")
    p.add_argument("--data", choices=("auto", "eurosat", "synthetic"), default="auto",
                   help="auto: EuroSAT where a local copy is found (gpu mode), else synthetic")
    p.add_argument("--source", default=None, help="EuroSAT zip or folder (else the usual search)")
    p.add_argument("--data-dir", default=str(REPO_ROOT / "data"),
                   help="where EuroSAT's extracted copy, split and cache live")
    p.add_argument("--skip", nargs="+", default=[], choices=STAGES, help="stages not to run")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds for the whole doctor (default 540 on a GPU, 240 tiny): stages "
                   "are trimmed or skipped to keep it, and the page says which")
    return p


# --------------------------------------------------------------------------- 1. environment


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:  # absent or broken: the page says so
        return None


def environment() -> dict:
    """What this machine is, from torch and the OS alone (a bare box without the project's other
    packages still gets its environment section)."""
    import torch

    from hw2lib.core import gpu_check, machine
    from hw2lib.train import cpu_probe

    nvidia, tc = gpu_check.probe_nvidia(), gpu_check.torch_cuda()
    cpu_name = machine.cpu_info()[0]
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "torchvision": _version("torchvision"),
           "numpy": _version("numpy"), "cores": os.cpu_count(),
           "cpu_threads": torch.get_num_threads(), "cpu": cpu_name,
           "device": "cuda" if tc["available"] else "cpu",
           "device_name": torch.cuda.get_device_name(0) if tc["available"] else cpu_name,
           "torch_cuda": tc["cuda"], "cuda_available": tc["available"],
           "cudnn": torch.backends.cudnn.version() if tc["available"] else None,
           "nvidia": nvidia, "unusable_gpu": gpu_check.unusable_gpu_message(nvidia, tc)}
    env["imagenet_weights"] = _weights()
    if tc["available"]:
        prop = torch.cuda.get_device_properties(0)
        env.update(gpu_count=tc["device_count"], gpu_memory_gib=round(prop.total_memory / 2**30, 1),
                   capability=f"{prop.major}.{prop.minor}")
    else:
        try:
            env["cpu_precision"] = cpu_probe.cpu_precision()
        except Exception as exc:  # e.g. a package the probe's model needs is missing
            env["cpu_precision"] = {"error": f"{type(exc).__name__}: {exc}"}
    return env


def _weights() -> list[dict]:
    """Whether the ImageNet weights A-train (ResNet-50) and C (ResNet-18) start from are in the
    torch hub cache (nothing is downloaded)."""
    try:
        from hw2lib.nets.models import cached_weights

        return [cached_weights(m) for m in ("resnet50", "resnet18")]
    except Exception as exc:  # torchvision missing: the page says so
        return [{"error": f"{type(exc).__name__}: {exc}"}]


# --------------------------------------------------------------------------- 2. CUDA tests


CUDA_TEST_FILES = ("tests/test_cuda.py", "tests/test_gpu_check.py")


def cuda_tests(paths, tmp: Path, timeout: float = 300) -> dict:
    """`pytest -m cuda PATHS` in a subprocess (only the CUDA test files: a package another test
    file needs cannot abort the step): its outcome counts, failures and seconds."""
    if importlib.util.find_spec("pytest") is None:
        return {"ran": False, "reason": "pytest is not installed in this Python: the CUDA tests "
                "were not run (pip install pytest, or make test on this machine)"}
    junit = tmp / "cuda-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *paths]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ran": True, "reason": f"timed out after {timeout:.0f} s", "command": cmd[2:]}
    out = {"ran": True, "returncode": proc.returncode, "seconds": time.perf_counter() - t0,
           "command": " ".join(["pytest", *cmd[3:]]), "tail": proc.stdout[-2000:]}
    if junit.exists():
        out.update(parse_junit(junit))
    return out


# --------------------------------------------------------------------------- data


def data_choice(args, gpu: bool, tmp: Path) -> dict:
    """The data of the bench and the training: EuroSAT (when asked, or found locally in gpu mode)
    or a synthetic ImageFolder (`note` says why and that its accuracies mean nothing)."""
    from hw2lib import data as D

    want = args.data if args.data != "auto" else ("eurosat" if gpu else "synthetic")
    if want == "eurosat":
        try:
            D.prepare_eurosat(args.data_dir, args.source, download=False, progress=False)
            return {"kind": "eurosat", "data_dir": args.data_dir, "source": args.source,
                    "image_folder": None, "note": None}
        except D.DataError as exc:
            if args.data == "eurosat":
                raise
            note = f"EuroSAT not found ({str(exc)[:160]}…): synthetic data, accuracy meaningless"
    else:
        note = "synthetic data (tiny mode): images/s and accuracy are not EuroSAT's"
    folder = write_synthetic(tmp / "synthetic", per_class=40 if gpu else 6,
                             size=64 if gpu else 16)
    return {"kind": "synthetic", "data_dir": str(tmp / "data"), "source": None,
            "image_folder": str(folder), "note": note}


# --------------------------------------------------------------------------- the report


# (stage, what it is, the least seconds it needs, its share of the deadline on a GPU / tiny)
STAGE_PLAN = {
    "tests": ("the CUDA-marked tests", 15, 0.10, 0.25),
    "bench": ("hw2 bench train", 20, 0.20, 0.10),
    "pack": ("packing on one GPU (MPS where available)", 15, 0.08, 0.10),
    "train": ("Track 2's best recipe", 20, 0.10, 0.10),
    "precision": ("the same in float32 (bf16 vs float32 accuracy)", 20, 0.08, 0.10),
    "plan": ("hw2 plan --time", 20, 0.17, 0.25),
    "smoke": ("a smoke report on this device", 60, 0.20, 0.0),
    "suite": ("the whole test suite (in the background)", 0, 0.0, 0.0),
}
STAGES = tuple(STAGE_PLAN)


class Deadline:
    """The doctor's clock: `left()` seconds of `total`; `share(stage)` the seconds a stage may
    take — its planned share, at most what is left once the later stages' least needs are kept."""

    def __init__(self, total: float, gpu: bool, stages: list[str]):
        self.total, self.gpu, self.stages, self.t0 = float(total), gpu, stages, time.perf_counter()

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.t0)

    def share(self, stage: str) -> float:
        _, _, gpu_share, tiny_share = STAGE_PLAN[stage]
        later = self.stages[self.stages.index(stage) + 1:]
        reserve = sum(STAGE_PLAN[s][1] for s in later)
        return max(0.0, min(self.total * (gpu_share if self.gpu else tiny_share),
                            self.left() - reserve))


def _stage(rep: dict, clock: Deadline, key: str, fn, *args) -> None:
    """One stage: run when the time left holds its least need (else recorded as skipped), its
    result or its error kept (the other stages still run), its seconds and share recorded."""
    what, need, _, _ = STAGE_PLAN[key]
    budget = clock.share(key)
    if budget < need or clock.left() < need:
        rep["skipped"].append({"stage": key, "what": what, "why": f"{clock.left():.0f} s of the "
                               f"{clock.total:.0f}-s deadline left, it needs ≥ {need} s"})
        return
    print(f"doctor: {what} (≤ {budget:.0f} s) …", flush=True)
    t0 = time.perf_counter()
    try:
        rep[key] = fn(*args, budget)
    except Exception as exc:  # a diagnosis reports what failed and goes on
        rep[key] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"doctor: {what} failed: {rep[key]['error']}", file=sys.stderr, flush=True)
    rep["stage_seconds"][key] = {"seconds": round(time.perf_counter() - t0, 1),
                                 "budget": round(budget, 1)}


def run_doctor(args) -> dict:
    import torch

    from hw2lib.gpu import measure as M

    env = environment()
    gpu = args.mode == "gpu" or (args.mode == "auto" and torch.cuda.is_available())
    if gpu and not torch.cuda.is_available():
        raise RuntimeError("--mode gpu but torch cannot use a CUDA device here"
                           + (f": {env['unusable_gpu']}" if env["unusable_gpu"] else ""))
    device = "cuda" if gpu else "cpu"
    epochs = args.epochs or (3 if gpu else 1)
    stages = [s for s in STAGES if s not in args.skip and (gpu or s not in ("smoke", "suite"))]
    clock = Deadline(args.deadline or (540 if gpu else 240), gpu, stages)
    rep: dict = {"mode": "gpu" if gpu else "tiny", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "environment": env, "deadline": clock.total, "skipped": [],
                 "stage_seconds": {}}
    if not gpu:
        rep["skipped"] += [{"stage": s, "what": STAGE_PLAN[s][0], "why": "tiny mode: make test "
                            "runs it on the CPU"} for s in ("smoke", "suite")]
    with tempfile.TemporaryDirectory(prefix="hw2-doctor-") as tmp_s:
        tmp = Path(tmp_s)
        suite = M.suite_start(tmp) if "suite" in stages else None
        if "tests" in stages:
            _stage(rep, clock, "tests", lambda budget: cuda_tests(list(CUDA_TEST_FILES), tmp,
                                                                 budget))
        data = rep["data"] = data_choice(args, gpu, tmp)
        for key, fn in (
                ("bench", lambda b: M.bench(gpu, data, tmp, b)),
                ("pack", lambda b: M.pack(gpu, data, tmp, b)),
                ("train", lambda b: M.train_track2(gpu, data, epochs, tmp)),
                ("precision", lambda b: M.precision_accuracy(gpu, data, epochs, tmp,
                                                             rep.get("train") or {})),
                ("plan", lambda b: M.plan_time(gpu, rep.get("bench") or {}, device, b)),
                ("smoke", lambda b: M.smoke_report(tmp, b))):
            if key in stages:
                _stage(rep, clock, key, fn)
        if (rep.get("train") or {}).get("test_correct") is not None:
            rep["train"].pop("test_correct")
        if "suite" in stages:
            rep["suite"] = M.suite_finish(suite, clock.left() - 5)
    rep["seconds"] = time.perf_counter() - clock.t0
    rep["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return rep


def main(argv=None) -> int:
    return run_from_args(parser().parse_args(argv))


def run_from_args(args) -> int:
    """Run the doctor with parsed options; write both files; 1 when a CUDA test failed."""
    if args.epochs is not None and args.epochs < 1:
        print(f"error: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 2
    try:
        rep = run_doctor(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    io.write_json(out / "doctor.json", rep)
    io.atomic_write_text(out / "doctor.md", markdown(rep))
    print(f"\nwrote {out / 'doctor.json'} and {out / 'doctor.md'}")
    t = rep.get("tests") or {}
    broken = [k for k in STAGES if "error" in (rep.get(k) or {})]
    if broken:
        print(f"error: doctor parts failed: {', '.join(broken)} (see doctor.md)", file=sys.stderr)
    return 1 if t.get("failed") or t.get("errors") or broken else 0


if __name__ == "__main__":
    sys.exit(main())
