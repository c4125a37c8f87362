"""Time estimates for `hw2 plan --time`: each training's seconds from a probe that runs the real
thing — `engine.fit` with the training's recipe (its augmentation through the `BatchLoader`, mixup /
CutMix, EMA, optimizer and schedule, loss, input size, the precision `run_experiment` would use),
a validation pass every epoch and the run folder's checkpoints — for two short epochs on random
uint8 images in memory (no image is read), then the final evaluation (8-view TTA where the recipe
has it). Beside `bench_train`, the benchmark it repeats in small.

One probe per distinct (model, stem, input size, batch, augmentation, mix, EMA, optimizer, TTA);
from its second epoch: training images/s, seconds per validation image (the EMA's second
pass included), the per-epoch overhead outside fit's epoch timer (checkpoints, history), and the
final evaluation's images/s.
"""

from __future__ import annotations

import tempfile
import time

from hw2lib.train import checkpoints as C
from hw2lib.train.recipes import DEFAULTS, LABELS, resolve

# What sets a training's speed (the schedule does not: it is taken from the first row of a key)
PROBE_KEYS = ("model", "stem", "size", "batch_size", "augment", "mix", "ema", "optimizer", "tta")


def _probe_cfg(row: dict, image_size: int) -> dict:
    """A plan row's recipe (its settings, the defaults where a row lacks one) and input size."""
    return {**DEFAULTS, **{k: row[k] for k in DEFAULTS if k in row},
            "size": row.get("resize") or image_size}


def probe_recipe(cfg: dict, *, device="auto", steps: int | None = None,
                 batch_size: int | None = None, val_images: int | None = None,
                 num_classes: int = 10, image_size: int = 64) -> dict:
    """Run `fit` with `cfg`'s recipe for 2 epochs of `steps` batches (default 20 on CUDA, 2 on the
    CPU) at `batch_size` (default the recipe's; at most 32 on the CPU) on random images, with a
    validation set of `val_images` and a run folder; then time the final evaluation. Returns
    train_img_s, val_s_per_image, overhead_s_per_epoch, eval_img_s (TTA's when the recipe has
    it), probe_batch, precision and the probe's own seconds."""
    import torch

    from hw2lib import data as D
    from hw2lib.core import runtime
    from hw2lib.nets.losses import build_loss
    from hw2lib.nets.models import build_model
    from hw2lib.train import engine as E
    from hw2lib.train.cpu_probe import precision_for
    from hw2lib.train.experiment import normalization

    dev = runtime.resolve_device(device)
    cuda = dev.type == "cuda"
    steps = steps or (20 if cuda else 2)
    bs = batch_size or (cfg["batch_size"] if cuda else min(cfg["batch_size"], 32))
    n_val = val_images or (1024 if cuda else 64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (steps * bs, 3, image_size, image_size), dtype=torch.uint8,
                      generator=gen)
    y = torch.arange(steps * bs) % num_classes
    xv = torch.randint(0, 256, (n_val, 3, image_size, image_size), dtype=torch.uint8,
                       generator=gen)
    yv = torch.arange(n_val) % num_classes
    mean, std = normalization({"pretrained": cfg.get("pretrained"), "model": cfg["model"]})
    resize = cfg.get("resize")
    train = D.BatchLoader(x, y, bs, shuffle=True, augment=cfg.get("augment") or "none",
                          device=dev, mean=mean, std=std, resize=resize, drop_last=True, seed=0)
    # validation at the batch a run evaluates with (larger on CUDA: runtime.eval_batch_size)
    val = D.BatchLoader(xv, yv, runtime.eval_batch_size(bs, dev), device=dev, mean=mean, std=std,
                        resize=resize)
    precision = precision_for(dev)
    torch.manual_seed(0)
    model = build_model(cfg["model"], num_classes, stem=cfg.get("stem") or "imagenet")
    crit = build_loss(cfg.get("loss") or "ce", class_counts=[max(1, steps * bs // num_classes)] *
                      num_classes, **(cfg.get("loss_kw") or {}))
    # the recipe itself, for two epochs (its milestones and warm-up within them)
    probe = resolve({**{k: v for k, v in cfg.items()
                        if k in DEFAULTS and k not in LABELS and v is not None},
                     "name": "probe", "seed": 0, "epochs": 2, "batch_size": bs,
                     "milestones": None,  # multistep: rescaled to the 2 epochs
                     "warmup_epochs": min(int(cfg.get("warmup_epochs") or 0), 1)})
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    writes: list[float] = []  # each checkpoint file's write, timed (fit writes at epochs 1 and 2)
    real_save = C.save

    def timed_save(obj, path):
        ts = time.perf_counter()
        real_save(obj, path)
        writes.append(time.perf_counter() - ts)

    C.save = timed_save
    try:
        with tempfile.TemporaryDirectory(prefix="hw2-probe-") as tmp:
            hist = E.fit(model, (train, val), probe, out_dir=tmp, device=dev, progress=False,
                         criterion=crit, amp=precision == "bf16")
            fit_wall = time.perf_counter() - t0
    finally:
        C.save = real_save
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None
    second = hist[-1]
    train_s = steps * bs / second["images_per_s"]
    if cuda:
        torch.cuda.synchronize(dev)
    t1 = time.perf_counter()
    if cfg.get("tta"):
        E.predict_tta(model, val, dev)
    else:
        E.predict(model, val, dev)  # returns CPU tensors: the device's work is done
    eval_s = time.perf_counter() - t1
    write_s = sum(writes) / 2  # one epoch's checkpoint files (both epochs were written)
    return {"train_img_s": second["images_per_s"],
            "val_s_per_image": max(second["seconds"] - train_s, 0.0) / n_val,
            "overhead_s_per_epoch": max(fit_wall - sum(h["seconds"] for h in hist)
                                        - sum(writes), 0.0) / 2,
            "checkpoint_write_s": write_s,
            "eval_img_s": n_val / max(eval_s, 1e-9), "probe_batch": bs, "probe_steps": steps,
            "eval_batch": val.batch_size, "peak_mem_gib": peak,
            "precision": precision, "device": str(dev), "probe_seconds": time.perf_counter() - t0}


# How `row_seconds` models a training's time (`hw2 plan --time` prints it).
OVERHEAD_MODEL = ("seconds = image-steps / training images/s + epochs × (val images × s per val "
                  "image + per-epoch overhead) + checkpoint writes × write s (the first and the "
                  "last epoch, and at most one every {every:g} s between) + (val + test images) / "
                  "final-evaluation images/s (8-view TTA where the recipe has it); each rate from "
                  "a 2-epoch probe of the recipe through fit, validation at the run's evaluation "
                  "batch")


def checkpoint_writes(epochs: int, epoch_s: float, every: float | None = None) -> int:
    """How many epochs `fit`'s CheckpointWriter writes: the first, the last, and one whenever
    `every` seconds have passed since the last write."""
    every = C.CHECKPOINT_EVERY_S if every is None else every
    if epochs <= 2:
        return epochs
    between = int((epochs - 1) * epoch_s // every) if every > 0 else epochs - 2
    return 2 + min(epochs - 2, between)


def row_seconds(r: dict, pr: dict) -> float:
    """A training's estimated seconds from its probe (`OVERHEAD_MODEL`): its image-steps at the
    training rate, every epoch's validation pass and overhead, the checkpoint writes at fit's
    cadence, and the final val + test evaluation (TTA's rate when the recipe has it)."""
    epoch_s = (r["image_steps"] / pr["train_img_s"] / r["epochs"]
               + r["n_val"] * pr["val_s_per_image"] + pr["overhead_s_per_epoch"])
    writes = checkpoint_writes(r["epochs"], epoch_s) * pr.get("checkpoint_write_s", 0.0)
    return r["epochs"] * epoch_s + writes + (r["n_val"] + r["n_test"]) / pr["eval_img_s"]


def estimate(rows: list[dict], *, device="auto", image_size: int = 64, progress=print,
             probe=None, rates: dict | None = None) -> dict:
    """Each row's `est_seconds` (None where its size is unknown), one probe per distinct recipe
    key. `rates` (key → probe result, e.g. measured by `hw2 doctor`) are used instead of probing
    where given. Returns the device and the probes."""
    from hw2lib.core.runtime import resolve_device

    dev = resolve_device(device)
    probe = probe or probe_recipe
    probes: dict[tuple, dict] = dict(rates or {})
    for r in rows:
        if r["image_steps"] is None or r["n_val"] is None:
            r["est_seconds"] = None
            continue
        cfg = _probe_cfg(r, image_size)
        key = tuple(cfg[k] for k in PROBE_KEYS)
        if key not in probes:
            progress(f"probing {cfg['model']} ({cfg['stem']} stem) at {cfg['size']} px, batch "
                     f"{cfg['batch_size']}, aug {cfg['augment']}, mix {cfg['mix']}, EMA "
                     f"{cfg['ema']:g}{', TTA' if cfg['tta'] else ''} on {dev} …")
            probes[key] = probe(cfg, device=dev, image_size=image_size)
        # a probe left out (a budget spent): the row's time is unknown, not zero
        r["est_seconds"] = None if probes[key].get("skipped") else row_seconds(r, probes[key])
        r["probe"] = dict(zip(PROBE_KEYS, key, strict=True))
    return {"device": str(dev),
            "probes": [{**dict(zip(PROBE_KEYS, k, strict=True)), **v} for k, v in probes.items()]}


def total_time(rows: list[dict], *, executor: str = "local", gpus: int = 0,
               gpus_per_run: float = 1.0, pack_gain: float | None = None) -> dict:
    """The estimated total: one after another (`local`), and under `ray` with
    floor(gpus / gpus_per_run) runs at once. Without `pack_gain` perfect packing is assumed (the
    ray figure a lower bound); with it (total images/s of the packed runs over one run's, as
    `hw2 bench train --pack` measures) the runs on one GPU share its measured throughput."""
    known = [r["est_seconds"] for r in rows if r.get("est_seconds") is not None]
    serial = float(sum(known))
    out = {"serial_seconds": serial, "unknown": len(rows) - len(known), "executor": executor}
    if executor == "ray":
        slots = max(1, int(gpus // gpus_per_run)) if gpus else 1
        per_gpu = max(1, int(1 // gpus_per_run)) if gpus_per_run < 1 else 1
        packed = pack_gain is not None and gpus_per_run < 1
        speedup = max(1, gpus) * min(pack_gain, per_gpu) if packed else slots
        out.update(concurrent=slots, seconds=serial / speedup, pack_gain=pack_gain)
    else:
        out["seconds"] = serial
    return out
