"""The doctor's measurements, each a stage with a time budget (`hw2lib.gpu.doctor` runs them
under one deadline): throughput and the host's share of a step (launch-bound or not), packing,
a Track-2 training (its host syncs counted over training steps only, its checkpoints' disk),
bf16 against float32 accuracy, the timed `full` plan (its peak memory per recipe), a `smoke`
report on this device, and the whole test suite."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

from hw2lib.core import io, paths

REPO_ROOT = paths.SOURCE_ROOT
GPU_VARIANTS = ("fp32", "bf16", "bf16_cl")
COMPILED_MODELS = ("resnet18:small", "resnext18")
TRACK2_MODEL = "resnet18:small"
PACK_MODEL = "resnext18"  # launch-bound at 64 px: where packing runs on one GPU pays
LAUNCH_BOUND = 0.8  # a step whose host time is this share of its wall time waits on launches


def _bench_import(name: str):
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"bench.{name}")


def data_argv(data: dict) -> list[str]:
    argv = ["--data-dir", data["data_dir"]]
    if data["image_folder"]:
        argv += ["--image-folder", data["image_folder"]]
    elif data["source"]:
        argv += ["--source", data["source"]]
    return argv


# --------------------------------------------------------------------------- shared pieces


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


# --------------------------------------------------------------------------- throughput


def _bench_run(argv: list[str], path: Path) -> dict:
    bt = _bench_import("bench_train")
    if bt.main([*argv, "--json", str(path)]) != 0:
        raise RuntimeError(f"hw2 bench train {' '.join(argv)} failed")
    return io.read_json(path, what="bench result")


def bench(gpu: bool, data: dict, tmp: Path, budget: float) -> dict:
    """`hw2 bench train`: on the GPU every study model × GPU_VARIANTS (Track 2's model first),
    then the compiled variant of COMPILED_MODELS, within `budget` seconds (what is left out is
    listed); tiny — one model, one step. Each row carries the host's ms per step beside the wall
    ms per step (`launch_bound` where the host is most of it)."""
    dev = "cuda" if gpu else "cpu"
    if gpu:
        bt = _bench_import("bench_train")
        models = [TRACK2_MODEL] + [m for m in bt.STUDY_MODELS if m != TRACK2_MODEL]
        runs = [(models, list(GPU_VARIANTS), ["--batches", "50", "--warmup", "10", "--modes",
                                              "raw", "fast"], 0.6),
                (list(COMPILED_MODELS), ["bf16_cl_compile"],
                 ["--batches", "50", "--warmup", "10", "--modes", "raw"], 0.4)]
    else:
        runs = [(["resnet18"], ["fp32"], ["--image-size", "16", "--batches", "1", "--warmup",
                                          "0", "--batch-size", "4", "--modes", "raw", "fast"], 1.0)]
    out = {"table": [], "left_out": [], "seconds": 0.0}
    t0 = time.perf_counter()
    for i, (models, variants, extra, share) in enumerate(runs):
        left = budget - (time.perf_counter() - t0)
        if left < 10 and out["table"]:
            out["left_out"] += [f"{m} {v}" for m in models for v in variants]
            continue
        res = _bench_run(["--models", *models, "--variants", *variants, *extra,
                          *data_argv(data), "--device", dev,
                          "--budget", str(max(left * share, 1.0))], tmp / f"bench-{i}.json")
        out["table"] += res["table"]
        out["left_out"] += res.get("left_out") or []
        out.update(batch_size=res["batch_size"], batches=res["batches"], device=res["device"],
                   cpu_precision=res.get("cpu_precision"))
    for row in out["table"]:
        raw = row["results"].get("raw", {})
        if raw.get("host_ms_per_step") is not None:
            row["host_share"] = raw["host_ms_per_step"] / raw["ms_per_step"]
            row["launch_bound"] = gpu and row["host_share"] >= LAUNCH_BOUND
    out["seconds"] = time.perf_counter() - t0
    return out


@contextlib.contextmanager
def mps_daemon():
    """CUDA MPS (one GPU context shared by the packed processes) for the block, where
    `nvidia-cuda-mps-control` exists and starts; yields whether it runs."""
    ctl = shutil.which("nvidia-cuda-mps-control")
    started = False
    if ctl:
        try:
            started = subprocess.run([ctl, "-d"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError):
            started = False
    try:
        yield started
    finally:
        if started:
            subprocess.run([ctl], input=b"quit\n", capture_output=True, timeout=20)


def pack(gpu: bool, data: dict, tmp: Path, budget: float) -> dict:
    """K copies of the launch-bound ResNeXt-18 (bf16 + channels_last as fit runs it on CUDA) at
    once on one GPU, K = 1, 2, 4 — and again under CUDA MPS where it is available; tiny: two
    copies of a 16-px ResNet-18 step on the CPU."""
    if gpu:
        argv = ["--models", PACK_MODEL, "--variants", "bf16_cl", "--modes", "raw", "--batches",
                "50", "--warmup", "10", "--device", "cuda", "--pack", "2", "4"]
    else:
        argv = ["--models", "resnet18", "--variants", "fp32", "--modes", "raw", "--image-size",
                "16", "--batches", "1", "--warmup", "0", "--batch-size", "4", "--device", "cpu",
                "--pack", "2"]
    t0 = time.perf_counter()
    out = {"plain": _bench_run([*argv, *data_argv(data)], tmp / "pack.json")["pack"]}
    if gpu:  # full's default executor on this GPU follows it (gpu_levers.packing_choice)
        import torch

        from hw2lib.train.gpu_levers import record_packing

        record_packing(torch.cuda.get_device_name(0), out["plain"])
    if gpu and time.perf_counter() - t0 < budget / 2:
        with mps_daemon() as mps:
            out["mps"] = (_bench_run([*argv, *data_argv(data)], tmp / "pack-mps.json")["pack"]
                          if mps else None)
        out["mps_available"] = mps
    else:
        out["mps"], out["mps_available"] = None, False
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- a Track-2 training


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy",
              "nonzero")


@contextlib.contextmanager
def count_step_reads(device, window: tuple[int, int] = (5, 25)):
    """Counts, over the training steps numbered `window` (`engine.train_step` calls, wherever
    they come from), the reads of a device tensor's value on the host (`.item()`, `bool()`,
    `.tolist()`, ...: each a host↔device sync on a GPU) and, on CUDA, the syncs themselves
    (`torch.cuda.set_sync_debug_mode("warn")`). Checkpoint writes, the loss checks every
    `CHECK_EVERY` steps and the evaluation are outside the steps: not counted."""
    import torch
    from torch.overrides import TorchFunctionMode

    from hw2lib.train import engine as E

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    box = {"steps": 0, "counted_steps": 0, "host_reads": 0, "syncs": 0 if cuda else None,
           "window": list(window)}

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in HOST_READS and args and \
                    isinstance(args[0], torch.Tensor) and args[0].device.type == dev.type:
                box["host_reads"] += 1
            return func(*args, **(kwargs or {}))

    real = E.train_step

    def counted(*args, **kwargs):
        i = box["steps"]
        box["steps"] += 1
        if not window[0] <= i < window[1]:
            return real(*args, **kwargs)
        box["counted_steps"] += 1
        with warnings.catch_warnings(record=True) as caught, Reads():
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                return real(*args, **kwargs)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
                    box["syncs"] += sum("synchroniz" in str(w.message) for w in caught)

    E.train_step = counted
    try:
        yield box
    finally:
        E.train_step = real


def best_recipe_config(epochs: int, batch_size: int | None = None):
    """Track 2's best recipe as `hw2 plan --profile full` resolves it, for `epochs` epochs: its
    warm-up and milestones scaled to them (`recipes.with_epochs`), as a profile's are."""
    from hw2lib.report.plan import plan
    from hw2lib.train.recipes import DEFAULTS, resolve, with_epochs

    row = next(r for r in plan("full", ["B-ablation"]) if r["name"] == "best" and r["seed"] == 0)
    spec = {k: row[k] for k in DEFAULTS if k in row}
    spec.update(name="best", seed=0, milestones=None)
    spec = with_epochs(spec, epochs)
    if batch_size:
        spec["batch_size"] = batch_size
    return resolve(spec)


def train_track2(gpu: bool, data: dict, epochs: int, tmp: Path, *, precision=None,
                 folder: str = "track2") -> dict:
    """One Track-2 best-recipe training (`fit` as `run_experiment` calls it) on the data's full
    train split: images/s, val/test accuracy with and without TTA, the host reads and syncs of its
    training steps, and its checkpoints' sizes. `precision` ("fp32"/"bf16") overrides the
    device's."""
    import numpy as np

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
    precision = precision or precision_for(dev)
    out = tmp / folder
    t0 = time.perf_counter()
    # on a GPU the first steps (cuDNN's autotuning, the allocator) are left out of the count
    with count_step_reads(dev, (5, 25) if gpu else (0, 20)) as reads:
        hist = E.fit(model, (train, val), cfg, out_dir=out, device=dev, progress=False,
                     amp=precision == "bf16", criterion=build_loss(
                         cfg.loss, class_counts=ds.class_counts("train"), **cfg.loss_kw))
    fit_s = time.perf_counter() - t0
    files = {p.name: p.stat().st_size for p in out.glob("*.pt")}
    load_checkpoint(out / "best.pt", model)
    res: dict = {}
    preds = X.evaluate_splits(model, ds, {"val": idx["val"], "test": idx["test"]}, cfg, dev, res)
    counted = max(reads["counted_steps"], 1)
    return {"recipe": {k: cfg[k] for k in ("model", "stem", "optimizer", "lr", "schedule",
                                           "warmup_epochs", "augment", "mix", "ema", "tta",
                                           "batch_size")},
            "epochs": len(hist), "n_train": len(idx["train"]), "precision": precision,
            "images_per_s": [h["images_per_s"] for h in hist], "fit_seconds": fit_s,
            "val_acc": res["val_acc"], "test_acc": res["test_acc"],
            "test_acc_no_tta": res.get("test_acc_no_tta"),
            "test_correct": (preds["test_logits"].argmax(1) == preds["test_targets"]).tolist(),
            "step_reads": {**reads, "host_reads_per_step": reads["host_reads"] / counted,
                           "syncs_per_step": None if reads["syncs"] is None
                           else reads["syncs"] / counted},
            "checkpoint_bytes": files, "test_n": int(np.asarray(preds["test_targets"]).size)}


def precision_accuracy(gpu: bool, data: dict, epochs: int, tmp: Path, first: dict) -> dict:
    """The same Track-2 training in the other precision than `first` (the train stage's: bf16 on
    a GPU): both runs' val and test accuracy and images/s, and bf16 − float32 on the test images
    with the exact McNemar test (one seed each: evaluation noise only)."""
    from hw2lib.study.stats import images_test

    if not first or "error" in first:
        raise RuntimeError("needs the Track-2 training of the train stage")
    other = "fp32" if first["precision"] == "bf16" else "bf16"
    second = train_track2(gpu, data, epochs, tmp, precision=other, folder=f"track2-{other}")
    runs = {first["precision"]: first, other: second}
    a, b = runs["bf16"]["test_correct"], runs["fp32"]["test_correct"]
    test = images_test(a, b) if len(a) == len(b) else None
    return {**{k: {m: r[m] for m in ("val_acc", "test_acc", "images_per_s")}
               for k, r in runs.items()},
            "bf16_minus_fp32_test": None if test is None else {
                k: test[k] for k in ("diff", "lo", "hi", "p", "only_a", "only_b")},
            "epochs": epochs}


# --------------------------------------------------------------------------- plan --time


def plan_time(gpu: bool, bench_res: dict, device, budget: float) -> dict:
    """The `full` plan (tiny: `smoke`) timed by probing each recipe through fit (the real
    checkpoint cadence and evaluation batch; peak GPU memory per recipe), beside the same plan's
    training steps at the bench's raw rates. Probes left when `budget` is spent are listed."""
    from hw2lib.report.plan import plan

    est = _bench_import("estimate")
    profile = "full" if gpu else "smoke"
    rows = plan(profile)
    t0 = time.perf_counter()
    left_out: list[str] = []

    def probe(cfg, *, device, image_size):
        if time.perf_counter() - t0 > budget:
            left_out.append(f"{cfg['model']}:{cfg['stem']} mix {cfg['mix']} EMA {cfg['ema']:g}")
            raise TimeoutError("the doctor's budget for plan --time is spent")
        if gpu:
            return est.probe_recipe(cfg, device=device, image_size=image_size)
        # tiny: one step of 4 images per epoch, 8 validation images, 32 px, no resize
        return est.probe_recipe({**cfg, "resize": None}, device=device, steps=1, batch_size=4,
                                val_images=8, image_size=32)

    info = est.estimate(rows, device=device, probe=_skipping(probe),
                        progress=lambda m: print(m, flush=True))
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
    from hw2lib.train.checkpoints import CHECKPOINT_EVERY_S

    return {"profile": profile, "trainings": len(rows), **total, "by_notebook": by_nb,
            "bench_train_seconds": at_bench if missing < len(rows) else None,
            "bench_variant": variant, "bench_rows_missing": missing,
            "probes": [p for p in info["probes"] if "train_img_s" in p], "left_out": left_out,
            "model": est.OVERHEAD_MODEL.format(every=CHECKPOINT_EVERY_S),
            "probe_seconds": time.perf_counter() - t0}


def _skipping(probe):
    """A probe that, once the budget is spent, leaves its row unestimated instead of failing."""
    def wrapped(cfg, **kw):
        try:
            return probe(cfg, **kw)
        except TimeoutError:
            return {"train_img_s": float("inf"), "val_s_per_image": 0.0, "overhead_s_per_epoch":
                    0.0, "checkpoint_write_s": 0.0, "eval_img_s": float("inf"),
                    "skipped": True}

    return wrapped


# --------------------------------------------------------------------------- a smoke report, the suite


def smoke_report(tmp: Path, budget: float) -> dict:
    """`hw2 report --profile smoke` on this device (papermill, feature visualization, t-SNE, cRT)
    on synthetic images, B and C through Ray with half a GPU a run: every notebook's status."""
    images = write_synthetic(tmp / "smoke-images", per_class=12, size=32)
    out = tmp / "smoke-report"
    cmd = [sys.executable, "-m", "hw2lib.cli", "report", "--profile", "smoke", "--out", str(out),
           "-p", "image_folder", str(images), "-p", "image_size", "32", "-p", "data_dir",
           str(tmp / "smoke-data")]
    ray = importlib.util.find_spec("ray") is not None
    if ray:
        cmd += ["-p", "executor", "ray", "-p", "gpus_per_run", "0.5"]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=budget,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"ran": True, "finished": False, "reason": f"did not finish in {budget:.0f} s",
                "ray": ray}
    status = {}
    if (out / "status.json").exists():
        status = {nb: s["status"] for nb, s in io.read_json(out / "status.json").items()}
    return {"ran": True, "finished": True, "returncode": proc.returncode, "status": status,
            "ray": ray, "seconds": time.perf_counter() - t0, "tail": proc.stderr[-1500:]}


def suite_start(tmp: Path, threads: int = 4):
    """The whole test suite (`make test`'s pytest) in the background, with few CPU threads so that
    it leaves the GPU stages their cores; `suite_finish` collects it."""
    if importlib.util.find_spec("pytest") is None:
        return None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = open(tmp / "suite.log", "w")  # noqa: SIM115 - closed by suite_finish
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"--junitxml={tmp / 'suite.xml'}"], cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    return {"proc": proc, "log": log, "t0": time.perf_counter(), "path": tmp}


def suite_finish(job, wait: float) -> dict:
    """The background suite's outcome: its counts when it finished within `wait` more seconds,
    else what its progress line shows when it was stopped."""
    if job is None:
        return {"ran": False, "reason": "pytest is not installed in this Python"}
    proc = job["proc"]
    try:
        proc.wait(timeout=max(wait, 0.0))
        finished = True
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=30)
        finished = False
    job["log"].close()
    text = (job["path"] / "suite.log").read_text(errors="replace")
    out = {"ran": True, "finished": finished, "seconds": time.perf_counter() - job["t0"],
           "tail": text[-1500:]}
    if finished and (job["path"] / "suite.xml").exists():
        out.update(parse_junit(job["path"] / "suite.xml"), returncode=proc.returncode)
    else:
        dots = "".join(re.findall(r"^[.sFEx]+", text, flags=re.M))
        out.update(passed=dots.count("."), failed=dots.count("F"), errors=dots.count("E"),
                   skipped=dots.count("s"), reason="stopped at the doctor's deadline: the counts "
                   "are of the tests run by then; run `make test` apart for the whole suite")
    return out
