"""One experiment = a recipe (model, optimizer, schedule, augmentation, loss, epochs, seed) trained
with `engine.fit` on given data, evaluated on val and test, recorded as `result.json`.

A run is its identity: everything that determines its result — the resolved recipe, the data (the
dataset's fingerprint, the exact train/val/test rows, long-tail counts), the weights it started
from, the step cap and the hw2lib version — as one canonical record whose hash names the run
folder (`<name>-s<seed>-<hash8>`). The same identity reuses a finished run (or resumes an
interrupted one); a different identity is a new folder, never a reuse and never a resume.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from hw2lib import __version__
from hw2lib import data as D
from hw2lib.core import io
from hw2lib.core.constants import EUROSAT_MEAN, EUROSAT_STD
from hw2lib.core.runtime import eval_batch_size, resolve_device, seed_everything
from hw2lib.nets.losses import build_loss
from hw2lib.nets.metrics import accuracy, balanced_accuracy, per_class_accuracy
from hw2lib.nets.models import (
    WeightsUnavailable,
    build_model,
    count_parameters,
    pretrained_preprocessing,
)
from hw2lib.train import gpu_levers
from hw2lib.train.checkpoints import LAST, load_checkpoint
from hw2lib.train.cpu_probe import channels_last_for, precision_for
from hw2lib.train.engine import fit, predict, predict_tta
from hw2lib.train.recipes import Recipe, from_stored

RANDOM_INIT_PREFIX = "ImageNet weights for "
IDENTITY_FILE = "identity.json"
RESULT_FILE = "result.json"


# --------------------------------------------------------------------------- identity


def _rows_digest(rows) -> str:
    return io.sha256_bytes(np.ascontiguousarray(np.asarray(rows, dtype=np.int64)).tobytes())[:16]


def data_fingerprint(ds) -> dict:
    """What identifies a dataset build: its split file's content, the digest of its cached pixels
    (checked against the cache's record when it was read), its classes and image size."""
    return {"split_file_sha256": io.sha256_file(ds.split_csv)[:16],
            "cache_sha256": getattr(ds, "cache_digest", "")[:16], "classes": list(ds.classes),
            "image_size": int(ds.x.shape[-1])}


def weights_identity(cfg: dict, weights, warning: str | None) -> dict | None:
    """The weights a run started from: a file's hash, torchvision's ImageNet weights, or the
    random init that replaced unavailable ones."""
    if warning:
        return {"random_init": "ImageNet weights were unavailable"}
    if weights is not None:
        return {"file": Path(weights).name, "sha256": io.sha256_file(weights)[:16]}
    if cfg.get("pretrained"):
        return {"torchvision": f"{cfg['model']} ImageNet (torchvision default)"}
    return None


def run_identity(recipe: Recipe, data: dict, *, weights: dict | None, max_steps,
                 precision: str | None = None, levers: dict | None = None,
                 layout: str | None = None) -> dict:
    """The canonical record of everything that determines a run's result. `precision` ("fp32" or
    "bf16", see `cpu_probe.precision_for`) is the arithmetic it trains in: recorded when given;
    `levers` (`gpu_levers.identity_part`: the compiled train step) only when there is one, and
    `layout` ("channels_last", the CPU probe's lever) only when it is not the plain one."""
    extra = {} if precision is None else {"precision": precision}
    if layout:
        extra["layout"] = layout
    if levers:
        extra["levers"] = levers
    return io.to_builtin({"recipe": recipe.identity(), "data": data, "weights": weights,
                          "max_steps": max_steps, "hw2lib": __version__, **extra})


def identity_hash(identity: dict) -> str:
    return io.sha256_text(io.canonical(identity))


def run_folder(run_root, cfg: Recipe, identity: dict) -> Path:
    """`<run_root>/<name>-s<seed>-<hash8>`: readable, and unique to the identity."""
    return Path(run_root) / f"{cfg['name']}-s{cfg['seed']}-{identity_hash(identity)[:8]}"


# --------------------------------------------------------------------------- building blocks


def load_backbone(name: str, num_classes: int, *, pretrained: bool, weights=None,
                  allow_random_init: bool = False, stem: str = "imagenet"):
    """`build_model`, with the offline rule: no ImageNet weights → random init only where allowed,
    and then a warning string the notebook must show. Returns (model, warning or None)."""
    try:
        return build_model(name, num_classes, pretrained=pretrained, weights=weights,
                           stem=stem), None
    except WeightsUnavailable as exc:
        if not allow_random_init:
            raise
        msg = (f"{RANDOM_INIT_PREFIX}{name} could not be had, so this run trains from RANDOM "
               f"INITIALIZATION: its numbers are not those of a pretrained model. ({exc})")
        warnings.warn(msg, stacklevel=2)
        return build_model(name, num_classes, pretrained=False, stem=stem), msg


def normalization(cfg: dict):
    """Mean/std that go with the model: ImageNet's for pretrained backbones, EuroSAT's otherwise."""
    if cfg.get("pretrained"):
        pre = pretrained_preprocessing(cfg["model"])
        return pre["mean"], pre["std"]
    return EUROSAT_MEAN, EUROSAT_STD


def make_loader(ds, rows, cfg: dict, device, *, train: bool, batch_size: int | None = None,
                eval_factor: int | None = None):
    """The fast batch loader over dataset rows, with the recipe's preprocessing. An evaluation
    loader's batch is `runtime.eval_batch_size`'s (larger on CUDA: `eval_factor` × the training
    batch, the GPU lever's choice) unless `batch_size` is given."""
    rows = np.asarray(rows)
    factor = {} if eval_factor is None else {"factor": eval_factor}
    bs = batch_size or (cfg["batch_size"] if train or device is None
                        else eval_batch_size(cfg["batch_size"], device, **factor))
    mean, std = normalization(cfg)
    return D.BatchLoader(ds.x[rows], ds.y[rows], bs, shuffle=train,
                         augment=cfg["augment"] if train else "none", device=device, mean=mean,
                         std=std, resize=cfg["resize"], drop_last=train and len(rows) > bs,
                         seed=cfg["seed"])


def load_trained(checkpoint, device="cpu"):
    """Rebuild a model trained by `run_experiment` from its checkpoint: (model in eval mode, its
    recipe)."""
    ckpt = load_checkpoint(checkpoint)
    cfg = from_stored(ckpt["config"])
    fc = [v for k, v in ckpt["model"].items() if k.endswith("fc.weight")]
    num_classes = fc[-1].shape[0] if fc else 10
    model = build_model(cfg.model, num_classes, stem=cfg.stem)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg


def load_predictions(folder) -> dict:
    """The val/test logits and targets saved by `run_experiment`."""
    with np.load(Path(folder) / "predictions.npz") as z:
        return {k: z[k] for k in z.files}


def per_image_correct(folder, split: str = "test", variant: str = ""):
    """(one correctness flag per image, the targets) of a run on `split` from its saved
    predictions; `variant` "_no_tta" (the plain forward of a TTA run), "_raw" (the raw weights of
    an EMA run) or "_raw_no_tta". None when the run saved no such predictions."""
    if folder is None or not (Path(folder) / "predictions.npz").exists():
        return None
    p = load_predictions(folder)
    logits = p.get(f"{split}_logits{variant}")
    if logits is None:
        return None
    targets = p[f"{split}_targets"]
    return logits.argmax(1) == targets, targets


def _finished(folder: Path, identity: dict) -> dict | None:
    """The finished result in `folder` when its identity is `identity`; None otherwise."""
    path = folder / RESULT_FILE
    if not path.exists() or not (folder / "predictions.npz").exists():
        return None
    try:
        done = io.read_json(path, what="result")
    except io.CorruptFileError as exc:
        warnings.warn(f"{exc}; training this run again", stacklevel=3)
        return None
    return done if done.get("identity") == identity else None


# --------------------------------------------------------------------------- the run


def run_experiment(cfg: Recipe, ds, run_root, *, train_idx, val_idx, test_idx, device=None,
                   class_counts=None, weights=None, allow_random_init=False, progress="auto",
                   max_steps=None, force: bool = False, fingerprint: dict | None = None,
                   finished: dict | None = None) -> dict:
    """Train one recipe on the given rows in its identity's folder under `run_root` (or reuse the
    finished run of the same identity; `force` trains it anew), then evaluate best.pt on val and
    test. Returns the result: identity, run folder, accuracies, parameter count, times.

    Where the dataset's files are not at hand (a Ray task on another node), `fingerprint` is its
    `data_fingerprint` computed where they are, and `finished` maps folder names to the results of
    finished runs kept there (the driver's `run_root`): one of this identity is reused."""
    device = resolve_device(device)
    seed_everything(cfg["seed"])
    # The model is built before the reuse check: whether ImageNet weights could be had (or random
    # init replaced them) is part of the identity.
    model, warn = load_backbone(cfg["model"], ds.num_classes, pretrained=cfg["pretrained"],
                                weights=weights, allow_random_init=allow_random_init,
                                stem=cfg["stem"])
    data = {**(fingerprint or data_fingerprint(ds)), "train_rows": _rows_digest(train_idx),
            "val_rows": _rows_digest(val_idx), "test_rows": _rows_digest(test_idx),
            "n_train": len(train_idx), "class_counts": class_counts}
    precision = precision_for(device)  # bf16 on CUDA; on the CPU the measured choice
    steps = max(len(train_idx) // int(cfg["batch_size"]), 1)
    levers = gpu_levers.levers_for(cfg, device, steps_total=int(cfg["epochs"]) * (
        steps if max_steps is None else min(steps, int(max_steps))))  # {} off CUDA
    cl = channels_last_for(device)  # the CPU's measured layout (None: runtime's, on CUDA)
    identity = run_identity(cfg, data, weights=weights_identity(cfg, weights, warn),
                            max_steps=max_steps, precision=precision,
                            levers=gpu_levers.identity_part(levers),
                            layout="channels_last" if cl else None)
    folder = run_folder(run_root, cfg, identity)
    if force and folder.exists():
        shutil.rmtree(folder)
    done = _finished(folder, identity)
    if done is None and not force and folder.name in (finished or {}):
        done = finished[folder.name] if finished[folder.name].get("identity") == identity else None
    if done is not None:
        return {**done, "run_folder": str(folder), "reused": True}
    io.write_json(folder / IDENTITY_FILE, identity)

    factor = levers.get("eval_factor")
    train_loader = make_loader(ds, train_idx, cfg, device, train=True)
    val_loader = make_loader(ds, val_idx, cfg, device, train=False, eval_factor=factor)
    criterion = build_loss(cfg["loss"], class_counts=class_counts, **cfg["loss_kw"])
    t0 = time.perf_counter()
    history = fit(model, (train_loader, val_loader), cfg, out_dir=folder, device=device,
                  progress=progress, criterion=criterion, max_steps=max_steps,
                  amp=precision == "bf16", compile_mode=levers.get("compile"),
                  channels_last=cl)
    load_checkpoint(folder / "best.pt", model)
    out = {"identity": identity, "run_id": identity_hash(identity)[:8], "config": cfg.as_dict(),
           "params": count_parameters(model), "warning": warn,
           "train_seconds": round(sum(h["seconds"] for h in history), 1),
           "wall_seconds": round(time.perf_counter() - t0, 1), "epochs_run": len(history),
           "best_epoch": int(np.argmax([h[f"val_{cfg.select}"] for h in history])) + 1}
    rows = {"val": val_idx, "test": test_idx}
    preds = evaluate_splits(model, ds, rows, cfg, device, out, eval_factor=factor)
    if cfg["ema"] and cfg["ema_raw"] and (folder / "best_raw.pt").exists():  # the EMA lever
        preds.update(evaluate_raw(model, folder, ds, rows, cfg, device, out, eval_factor=factor))
    np.savez_compressed(folder / "predictions.npz", **preds)
    io.write_json(folder / RESULT_FILE, out)
    # A finished run is reused, never resumed (its identity fixes its epochs): last.pt — the
    # optimizer state, 2–4× the weights — is dead weight now (of a `full` study: tens of GB).
    (folder / LAST).unlink(missing_ok=True)
    return {**out, "run_folder": str(folder), "reused": False}


def evaluate_splits(model, ds, rows: dict, cfg: dict, device, out: dict, *,
                    eval_factor: int | None = None) -> dict:
    """Accuracy, balanced and per-class accuracy of `model` on each split into `out`; returns the
    logits and targets (`<split>_logits`, `<split>_targets`). With the recipe's `tta` the logits
    are the 8-view TTA's, and the plain forward's accuracies are kept as `<split>_acc_no_tta`
    and `<split>_bal_acc_no_tta`, its logits as `<split>_logits_no_tta` (the same pass: the
    plain view is one of the 8)."""
    preds = {}
    for split, idx in rows.items():
        loader = make_loader(ds, idx, cfg, device, train=False, eval_factor=eval_factor)
        if cfg.get("tta"):
            logits, plain, targets = predict_tta(model, loader, device)
            y, p0 = targets.numpy(), plain.argmax(1).numpy()
            out[f"{split}_acc_no_tta"] = float(accuracy(y, p0))
            out[f"{split}_bal_acc_no_tta"] = float(balanced_accuracy(y, p0))
            preds[f"{split}_logits_no_tta"] = plain.numpy()  # for paired TTA intervals
        else:
            logits, targets = predict(model, loader, device)
        y, pred = targets.numpy(), logits.argmax(1).numpy()
        out[f"{split}_acc"] = float(accuracy(y, pred))
        out[f"{split}_bal_acc"] = float(balanced_accuracy(y, pred))
        out[f"{split}_per_class"] = per_class_accuracy(y, pred, ds.num_classes).tolist()
        out[f"{split}_n"] = int(len(y))
        preds[f"{split}_logits"], preds[f"{split}_targets"] = logits.numpy(), targets.numpy()
    return preds


def evaluate_raw(model, folder: Path, ds, rows: dict, cfg: dict, device, out: dict, *,
                 eval_factor: int | None = None) -> dict:
    """An EMA run's raw weights at their own val-chosen epoch (`best_raw.pt`, written by `fit`),
    scored like best.pt: `<split>_acc_raw` (and `_raw_no_tta` with TTA) into `out`, the logits
    as `<split>_logits_raw` (`…_raw_no_tta`). Loads those weights into `model`."""
    ckpt = load_checkpoint(folder / "best_raw.pt", model)
    raw: dict = {}
    preds = evaluate_splits(model, ds, rows, cfg, device, raw, eval_factor=eval_factor)
    for split in rows:
        for m in ("acc", "bal_acc", "acc_no_tta"):
            if f"{split}_{m}" in raw:
                out[f"{split}_{m.replace('acc', 'acc_raw', 1)}"] = raw[f"{split}_{m}"]
    out["best_epoch_raw"] = int(ckpt["epoch"])
    return {k.replace("_logits", "_logits_raw", 1): v for k, v in preds.items()
            if "_logits" in k}


def summarize(records: list[dict], by=("name",)) -> list[dict]:
    """Mean ± std over seeds of each experiment's val/test accuracy, with the runs' identities."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r["config"][k] for k in by), []).append(r)
    rows = []
    for key, rs in groups.items():
        row = dict(zip(by, key, strict=True))
        c = rs[0]["config"]
        row.update(track=c.get("track"), group=c.get("group"), model=c["model"], stem=c["stem"],
                   params=rs[0]["params"],
                   optimizer=c["optimizer"], lr=c["lr"], schedule=c["schedule"],
                   augment=c["augment"], loss=c["loss"], epochs=c["epochs"], seeds=len(rs))
        # with TTA: the plain forward's too; with EMA: the raw weights' too
        extra = ("val_acc_no_tta", "test_acc_no_tta", "val_acc_raw", "test_acc_raw",
                 "test_acc_raw_no_tta")
        row["seed_ids"] = [int(r["config"]["seed"]) for r in rs]
        for m in ("val_acc", "test_acc", "val_bal_acc", "test_bal_acc",
                  *[k for k in extra if all(r.get(k) is not None for r in rs)]):
            v = np.array([r[m] for r in rs], dtype=float)
            row[m], row[m + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            row[m + "_values"] = v.tolist()  # per seed (seed_ids): for paired intervals
        row["val_n"], row["test_n"] = rs[0].get("val_n"), rs[0].get("test_n")
        n_train = {(r.get("identity") or {}).get("data", {}).get("n_train") for r in rs}
        row["n_train"] = n_train.pop() if len(n_train) == 1 else None
        precision = {(r.get("identity") or {}).get("precision") for r in rs}
        row["precision"] = precision.pop() if len(precision) == 1 else None  # fp32 / bf16
        row["run_folders"] = [r.get("run_folder") for r in rs]
        row["wall_s"] = float(sum(r["wall_seconds"] for r in rs))
        row["run_ids"] = " ".join(r["run_id"] for r in rs)
        rows.append(row)
    return rows
