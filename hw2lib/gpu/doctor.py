"""`hw2 doctor` (`make gpu-check`): one call that measures what the GPU path needs, for the day a GPU
is at hand, and writes `reports/doctor/doctor.json` + `doctor.md`:

1. environment — NVIDIA driver and GPUs (seen without torch, `gpu_check`), torch and its CUDA,
   cuDNN, the device, cores; an NVIDIA device torch cannot use is named at the top;
2. the CUDA-marked tests (`pytest -m cuda`, in a subprocess; noted when pytest is not installed);
3. `hw2 bench train` over the study's models × {fp32, bf16, bf16+channels_last} (+ compiled for the
   models that carry the study) and packing 1/2/4 copies of Track 2's model on one GPU;
4. one Track-2 best-recipe training (`engine.fit`, the recipe of `hw2 plan`'s `best`) for a fixed
   number of epochs: images/s, val/test accuracy (8-view TTA) and the host syncs counted under
   `torch.cuda.set_sync_debug_mode("warn")`;
5. `hw2 plan --profile full --time` (each recipe probed through fit, bench/estimate.py) beside the
   same plan at the bench's raw training rates.

Without a usable GPU it runs in a tiny mode (tiny models, synthetic data, single steps; the
`smoke` plan), so that it cannot rot before it is needed (a CI test runs it). It needs only
torch and this source tree: `PYTHONPATH=. python -m hw2lib.cli doctor` works with any torch ≥ 2.4
(the bench and the estimate live in the checkout's bench/ folder).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

from hw2lib.core import io, paths
from hw2lib.gpu.doctor_page import markdown

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
    p.add_argument("--skip", nargs="+", default=[],
                   choices=("tests", "bench", "train", "plan"), help="parts not to run")
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


# --------------------------------------------------------------------------- 2. CUDA tests


def parse_junit(path) -> dict:
    """Counts and the failures (name, first line of the message) of a pytest junit XML file."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if kinds & {"failure", "error"}:
            key = "failed" if "failure" in kinds else "errors"
            counts[key] += 1
            el = case.find("failure") if "failure" in kinds else case.find("error")
            failures.append({"test": name, "message": (el.get("message") or "").split("\n")[0][:300]})
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def cuda_tests(paths, tmp: Path, timeout: float = 300) -> dict:
    """`pytest -m cuda PATHS` in a subprocess: its outcome counts, failures and seconds."""
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


def write_synthetic(root: Path, classes: int = 10, per_class: int = 20, size: int = 64) -> Path:
    """A tiny ImageFolder of noisy JPEGs around one colour per class (learnable)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        folder = root / f"class{k}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(30, 226, size=3)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)
    return root


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


def _data_argv(data: dict) -> list[str]:
    argv = ["--data-dir", data["data_dir"]]
    if data["image_folder"]:
        argv += ["--image-folder", data["image_folder"]]
    elif data["source"]:
        argv += ["--source", data["source"]]
    return argv


# --------------------------------------------------------------------------- 3. bench


def _bench_import(name: str):
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"bench.{name}")


def bench(gpu: bool, data: dict, tmp: Path) -> dict:
    """`hw2 bench train` runs: gpu — every study model × GPU_VARIANTS with packing 1/2/4 of
    Track 2's model, then the compiled variant of COMPILED_MODELS; tiny — one model, one step,
    packing 2."""
    bt = _bench_import("bench_train")
    if gpu:
        models = [TRACK2_MODEL] + [m for m in bt.STUDY_MODELS if m != TRACK2_MODEL]
        runs = [(models, list(GPU_VARIANTS), ["--batches", "50", "--warmup", "10", "--modes",
                                              "raw", "fast", "--pack", "1", "2", "4"]),
                (list(COMPILED_MODELS), ["bf16_cl_compile"],
                 ["--batches", "50", "--warmup", "10", "--modes", "raw", "fast"])]
    else:
        runs = [(["resnet18"], ["fp32"],
                 ["--image-size", "16", "--batches", "1", "--warmup", "0", "--batch-size", "4",
                  "--modes", "raw", "fast", "--pack", "2"])]
    out = {"table": [], "pack": [], "seconds": 0.0}
    t0 = time.perf_counter()
    for i, (models, variants, extra) in enumerate(runs):
        path = tmp / f"bench-{i}.json"
        rc = bt.main(["--models", *models, "--variants", *variants, *extra, *_data_argv(data),
                      "--device", "cuda" if gpu else "cpu", "--json", str(path)])
        if rc != 0:
            out.setdefault("errors", []).append(f"bench run {i} exited {rc}")
            continue
        res = io.read_json(path, what="bench result")
        out["table"] += res["table"]
        out["pack"] += res.get("pack") or []
        out.update(batch_size=res["batch_size"], batches=res["batches"], device=res["device"],
                   cpu_precision=res.get("cpu_precision"))
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- 4. Track-2 training


@contextlib.contextmanager
def count_syncs(device):
    """Counts host↔device synchronizations inside the block on CUDA (sync debug mode "warn", one
    warning each); `box["count"]` is None on other devices."""
    import torch

    box: dict = {"count": None}
    if torch.device(device).type != "cuda":
        yield box
        return
    prev = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield box
        finally:
            torch.cuda.set_sync_debug_mode(prev)
    box["count"] = sum("synchroniz" in str(w.message) for w in caught)


def best_recipe_config(epochs: int, batch_size: int | None = None):
    """Track 2's best recipe as `hw2 plan --profile full` resolves it, for `epochs` epochs."""
    from hw2lib.report.plan import plan
    from hw2lib.train.recipes import DEFAULTS, resolve

    row = next(r for r in plan("full", ["B-ablation"]) if r["name"] == "best" and r["seed"] == 0)
    spec = {k: row[k] for k in DEFAULTS if k in row}
    spec.update(name="best", epochs=epochs, seed=0, milestones=None)  # rescaled where multistep
    if batch_size:
        spec["batch_size"] = batch_size
    return resolve(spec)


def train_track2(gpu: bool, data: dict, epochs: int, tmp: Path) -> dict:
    """One Track-2 best-recipe training (`fit` as `run_experiment` calls it) on the data's full
    train split: images/s, val/test accuracy with and without TTA, and the syncs of its epochs."""
    from hw2lib import data as D
    from hw2lib.core import runtime
    from hw2lib.nets.losses import build_loss
    from hw2lib.nets.models import build_model
    from hw2lib.train import engine as E
    from hw2lib.train import experiment as X
    from hw2lib.train.checkpoints import load_checkpoint
    from hw2lib.train.cpu_probe import precision_for

    dev = runtime.resolve_device("cuda" if gpu else "cpu")
    cfg = best_recipe_config(epochs, None if gpu else 8)
    ds = D.load_dataset(data["data_dir"], source=data["source"], image_folder=data["image_folder"],
                        image_size=64 if gpu else 16, progress=False)
    idx = D.split_indices(ds)
    runtime.seed_everything(0)
    model = build_model(cfg["model"], ds.num_classes, stem=cfg["stem"])
    train = X.make_loader(ds, idx["train"], cfg, dev, train=True)
    val = X.make_loader(ds, idx["val"], cfg, dev, train=False)
    counts = ds.class_counts("train")
    precision = precision_for(dev)
    t0 = time.perf_counter()
    with count_syncs(dev) as syncs:
        hist = E.fit(model, (train, val), cfg, out_dir=tmp / "track2", device=dev,
                     progress=False, amp=precision == "bf16",
                     criterion=build_loss(cfg.loss, class_counts=counts, **cfg.loss_kw))
    fit_s = time.perf_counter() - t0
    load_checkpoint(tmp / "track2" / "best.pt", model)
    res: dict = {}
    X.evaluate_splits(model, ds, {"val": idx["val"], "test": idx["test"]}, cfg, dev, res)
    steps = sum(len(train) for _ in hist)
    return {"recipe": {k: cfg[k] for k in ("model", "stem", "optimizer", "lr", "schedule",
                                           "augment", "mix", "ema", "tta", "batch_size")},
            "epochs": len(hist), "n_train": len(idx["train"]), "precision": precision,
            "images_per_s": [h["images_per_s"] for h in hist], "fit_seconds": fit_s,
            "val_acc": res["val_acc"], "test_acc": res["test_acc"],
            "test_acc_no_tta": res.get("test_acc_no_tta"), "syncs": syncs["count"],
            "steps": steps, "syncs_per_step": None if syncs["count"] is None
            else syncs["count"] / max(steps, 1)}


# --------------------------------------------------------------------------- 5. plan --time


def plan_time(gpu: bool, bench_res: dict, device) -> dict:
    """The `full` plan (tiny: `smoke`) timed by probing each recipe through fit, beside the same
    plan's training steps at the bench's raw rates (the variant fit uses on the device)."""
    from hw2lib.report.plan import plan

    est = _bench_import("estimate")
    profile = "full" if gpu else "smoke"
    rows = plan(profile)
    probe = None
    if not gpu:  # tiny: one step of 4 images per epoch, 8 validation images, 32 px, no resize
        def probe(cfg, *, device, image_size):  # (at 16 px a smoke recipe gave a NaN val loss)
            return est.probe_recipe({**cfg, "resize": None}, device=device, steps=1,
                                    batch_size=4, val_images=8, image_size=32)
    t0 = time.perf_counter()
    info = est.estimate(rows, device=device, probe=probe, progress=lambda m: print(m, flush=True))
    total = est.total_time(rows)
    variant = "bf16_cl" if gpu else "fp32"
    rates = {(r["model"], r["stem"], r["size"]): r["results"]["raw"]["images_per_s"]
             for r in bench_res.get("table", []) if r["variant"] == variant and "raw" in r["results"]}
    at_bench, missing = 0.0, 0
    for r in rows:
        key = (r["model"], r["stem"], r["resize"] or (64 if gpu else 16))
        if key in rates and r["image_steps"] is not None:
            at_bench += r["image_steps"] / rates[key]
        else:
            missing += 1
    by_nb: dict = {}
    for r in rows:
        s = by_nb.setdefault(r["notebook"], {"trainings": 0, "seconds": 0.0})
        s["trainings"] += 1
        s["seconds"] += r.get("est_seconds") or 0.0
    return {"profile": profile, "trainings": len(rows), **total, "by_notebook": by_nb,
            "bench_train_seconds": at_bench if missing < len(rows) else None,
            "bench_variant": variant,
            "bench_rows_missing": missing, "probes": info["probes"],
            "probe_seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- the report


def _part(rep: dict, key: str, what: str, fn, *args) -> None:
    """One part of the doctor: its result, or its error (the other parts still run)."""
    print(f"doctor: {what} …", flush=True)
    t0 = time.perf_counter()
    try:
        rep[key] = fn(*args)
    except Exception as exc:  # a diagnosis reports what failed and goes on
        rep[key] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"doctor: {what} failed: {rep[key]['error']}", file=sys.stderr, flush=True)
    rep.setdefault("part_seconds", {})[key] = round(time.perf_counter() - t0, 1)


def run_doctor(args) -> dict:
    import torch

    env = environment()
    gpu = args.mode == "gpu" or (args.mode == "auto" and torch.cuda.is_available())
    if gpu and not torch.cuda.is_available():
        raise RuntimeError("--mode gpu but torch cannot use a CUDA device here"
                           + (f": {env['unusable_gpu']}" if env["unusable_gpu"] else ""))
    device = "cuda" if gpu else "cpu"
    epochs = args.epochs or (3 if gpu else 1)
    rep: dict = {"mode": "gpu" if gpu else "tiny", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "environment": env}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hw2-doctor-") as tmp_s:
        tmp = Path(tmp_s)
        parts = [p for p in ("tests", "bench", "train", "plan") if p not in args.skip]
        if "tests" in parts:
            paths = ["tests"] if gpu else ["tests/test_cuda.py", "tests/test_gpu_check.py"]
            _part(rep, "tests", "the CUDA-marked tests", cuda_tests, paths, tmp)
        data = rep["data"] = data_choice(args, gpu, tmp)
        if "bench" in parts:
            _part(rep, "bench", "hw2 bench train", bench, gpu, data, tmp)
        if "train" in parts:
            _part(rep, "train", f"Track 2's best recipe, {epochs} epochs", train_track2, gpu,
                  data, epochs, tmp)
        if "plan" in parts:
            _part(rep, "plan", "hw2 plan --time", plan_time, gpu, rep.get("bench") or {}, device)
    rep["seconds"] = time.perf_counter() - t0
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
    broken = [k for k in ("tests", "bench", "train", "plan") if "error" in (rep.get(k) or {})]
    if broken:
        print(f"error: doctor parts failed: {', '.join(broken)} (see doctor.md)", file=sys.stderr)
    return 1 if t.get("failed") or t.get("errors") or broken else 0


if __name__ == "__main__":
    sys.exit(main())
