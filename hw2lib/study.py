"""The study's glue: one experiment = (model, optimizer, schedule, augmentation, loss, seed) trained
with `engine.fit` in its own run folder, evaluated on val and test, recorded as `result.json`.

Notebooks describe *which* experiments to run; this module runs them the same way every time, skips
the ones already finished (same config) and resumes the interrupted ones from `last.pt`.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np


def subsample_per_class(labels, per_class: int | None, *, seed: int = 0) -> np.ndarray:
    """Positions of at most `per_class` items of each class (seeded); all positions when None."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    if per_class <= 0:
        raise ValueError(f"per_class must be a positive number of images or None, got {per_class}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        keep.append(np.sort(rng.permutation(pos)[:per_class]))
    return np.sort(np.concatenate(keep))


def write_json(path: Path | str, obj) -> None:
    """Atomic JSON write (temp + rename); NaN (an empty group's accuracy) becomes null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    plain = json.loads(json.dumps(obj, default=_jsonable))  # NaN survives as float('nan')
    tmp.write_text(json.dumps(_nan_to_none(plain), indent=2, allow_nan=False))
    os.replace(tmp, path)


def _nan_to_none(o):
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    return o


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# The HW2 report's own numbers (validation accuracy), for the index's comparison column.
REFERENCE = {
    "A/resnet50_pretrained": 0.9630,
    "B/resnet18": 0.80, "B/resnet34": 0.80,
    "B/dlresnet18_sgd": 0.815, "B/dlresnet18_adam": 0.825,
    "B/resnext50_32x4d": 0.86, "B/resnext18": 0.8906,
    "C/resnext18_ce": 0.8006, "C/resnext18_balanced_softmax": 0.8796,
    "C/resnet18_pretrained_ce": 0.8959, "C/resnet18_pretrained_balanced_softmax": 0.9404,
}


def show_warning(msg: str) -> None:
    """A warning a reader cannot miss, in the notebook and its HTML page."""
    import html

    from IPython.display import HTML, display

    display(HTML("<div style='background:#fff4e5;border-left:6px solid #f0a000;padding:.7em 1em;"
                 f"font-size:1.05em'><b>⚠ Warning.</b> {html.escape(msg)}</div>"))


def headline(name: str, value: float | None, reference: float | None = None, note: str = "") -> dict:
    """One row of the index's comparison table."""
    return {"name": name, "value": None if value is None else float(value),
            "reference": reference, "note": note}


def write_results(run_dir, *, headline_rows, metrics=None, warnings_=(), device=None, **extra) -> Path:
    """`results.json` of a notebook: what the index reads (headline, warnings, environment)."""
    from hw2lib.engine import run_info

    path = Path(run_dir) / "results.json"
    write_json(path, {"headline": list(headline_rows), "metrics": metrics or {},
                      "warnings": list(warnings_), "environment": run_info(device), **extra})
    return path


RANDOM_INIT_PREFIX = "ImageNet weights for "


def load_backbone(name: str, num_classes: int, *, pretrained: bool, weights=None,
                  allow_random_init: bool = False, stem: str = "imagenet", **kw):
    """`build_model`, with the offline rule: no ImageNet weights → random init only where allowed,
    and then a warning string the notebook must show. Returns (model, warning or None)."""
    from hw2lib.models import WeightsUnavailable, build_model

    try:
        return build_model(name, num_classes, pretrained=pretrained, weights=weights, stem=stem,
                           **kw), None
    except WeightsUnavailable as exc:
        if not allow_random_init:
            raise
        msg = (f"{RANDOM_INIT_PREFIX}{name} could not be had, so this run trains from RANDOM "
               f"INITIALIZATION: its numbers are not those of a pretrained model. ({exc})")
        warnings.warn(msg, stacklevel=2)
        return build_model(name, num_classes, pretrained=False, stem=stem, **kw), msg


DEFAULTS = dict(model="resnet18", stem="imagenet", optimizer="sgd", lr=0.05, momentum=0.9,
                nesterov=False, weight_decay=5e-4, schedule="none", milestones=None, gamma=None,
                warmup_epochs=0, augment="basic", loss="ce", loss_kw={}, model_kw={},
                pretrained=False, resize=None, batch_size=128)


def experiment_config(spec: dict, **common) -> dict:
    """Spec ∪ common settings ∪ defaults, as built-in types (it goes into checkpoints)."""
    cfg = {**DEFAULTS, **common, **spec}
    unknown = set(cfg) - set(DEFAULTS) - {"name", "epochs", "seed", "group", "label",
                                          "train_per_class", "val_per_class", "long_tail"}
    if unknown:
        raise ValueError(f"experiment {spec.get('name')!r}: unknown keys {sorted(unknown)}; "
                         f"known: {sorted(DEFAULTS)} + name, epochs, seed, group, label")
    if cfg["milestones"] is None and cfg["schedule"] == "multistep":
        # the study's [80, 120, 160] of 200 epochs, scaled to the epoch budget; on a short budget
        # two milestones may round to one epoch: kept once (a double one would divide by 25)
        cfg["milestones"] = sorted({max(1, round(cfg["epochs"] * f)) for f in (0.4, 0.6, 0.8)})
    if cfg["gamma"] is None:  # multistep: the study's ×0.2; exponential: ÷100 over the run
        cfg["gamma"] = 0.2 if cfg["schedule"] != "exponential" else 0.01 ** (1 / cfg["epochs"])
    return json.loads(json.dumps(cfg, default=_jsonable))


def notebook_setup(run_dir, *, seed: int, device="auto", figure_format: str = "png"):
    """The first cell of every notebook: run folder, one global seed, device, inline figures.

    `figure_format="jpeg"` suits notebooks of pictures (A-vis): a fraction of PNG's page size."""
    if figure_format not in ("png", "jpeg"):
        raise ValueError(f"figure_format must be 'png' or 'jpeg', got {figure_format!r}")
    import matplotlib.pyplot as plt

    from hw2lib.engine import resolve_device, run_info, seed_everything

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    dev = resolve_device(device)
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "figure.max_open_warning": 0})
    # The notebooks show the random-init warning as a box (show_warning); not twice on stderr.
    warnings.filterwarnings("ignore", message=RANDOM_INIT_PREFIX, category=UserWarning)
    from IPython import get_ipython

    if get_ipython() is not None:  # in a kernel (papermill, JupyterLab): inline figure format
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats(figure_format)
    info = run_info(dev)
    print("  ".join(f"{k}={v}" for k, v in info.items()))
    return run_dir, dev


def split_indices(ds, *, train_per_class=None, val_per_class=None, test_per_class=None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Dataset rows of each split, optionally capped per class (a seeded, stratified subset)."""
    out = {}
    for split, cap in (("train", train_per_class), ("val", val_per_class),
                       ("test", test_per_class)):
        rows = np.asarray(ds.indices(split))
        out[split] = rows[subsample_per_class(ds.y[rows].numpy(), cap, seed=seed)]
    return out


def count_table(ds, idx: dict[str, np.ndarray]):
    """Images per class in each split used: a DataFrame (classes × splits)."""
    import pandas as pd

    table = pd.DataFrame({s: np.bincount(ds.y[rows].numpy(), minlength=ds.num_classes)
                          for s, rows in idx.items()}, index=ds.classes)
    table.loc["total"] = table.sum()
    return table


def normalization(cfg: dict):
    """Mean/std that go with the model: ImageNet's for pretrained backbones, EuroSAT's otherwise."""
    from hw2lib import data as D
    from hw2lib.models import pretrained_preprocessing

    if cfg.get("pretrained"):
        pre = pretrained_preprocessing(cfg["model"])
        return pre["mean"], pre["std"]
    return D.EUROSAT_MEAN, D.EUROSAT_STD


def make_loader(ds, idx, cfg: dict, device, *, train: bool, balanced: bool = False):
    """The fast batch loader over dataset rows `idx`, with the experiment's preprocessing."""
    from hw2lib import data as D

    idx = np.asarray(idx)
    mean, std = normalization(cfg)
    return D.BatchLoader(ds.x[idx], ds.y[idx], cfg["batch_size"], shuffle=train,
                         augment=cfg["augment"] if train else "none", device=device, mean=mean,
                         std=std, resize=cfg["resize"], drop_last=train and len(idx) > cfg[
                             "batch_size"], seed=cfg["seed"], balanced=balanced)


def load_trained(checkpoint, device="cpu"):
    """Rebuild a model trained by `run_experiment` from its checkpoint: (model in eval mode, config)."""
    from hw2lib.engine import load_checkpoint
    from hw2lib.models import build_model

    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt["config"]
    fc = [v for k, v in ckpt["model"].items() if k.endswith("fc.weight")]
    num_classes = fc[-1].shape[0] if fc else 10
    model = build_model(cfg["model"], num_classes, stem=cfg["stem"], **cfg.get("model_kw", {}))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg


def experiment_dir(run_root, cfg: dict) -> Path:
    """Where one (experiment, seed) lives under a notebook's run folder."""
    return Path(run_root) / f"{cfg['name']}-s{cfg['seed']}"


def run_experiment(cfg: dict, ds, run_dir, *, train_idx, val_idx, test_idx, device=None,
                   class_counts=None, weights=None, allow_random_init=False, progress="auto",
                   max_steps=None) -> dict:
    """Train one configuration (or reuse a finished run with the same config); evaluate best.pt."""
    from hw2lib.engine import fit, load_checkpoint, predict, resolve_device, seed_everything
    from hw2lib.losses import build_loss
    from hw2lib.metrics import accuracy, balanced_accuracy, per_class_accuracy
    from hw2lib.models import count_parameters

    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if result_path.exists():
        done = json.loads(result_path.read_text())
        if done.get("config") == cfg:
            return done
    device = resolve_device(device)
    seed_everything(cfg["seed"])
    model, warn = load_backbone(cfg["model"], ds.num_classes, pretrained=cfg["pretrained"],
                                weights=weights, allow_random_init=allow_random_init,
                                stem=cfg["stem"], **cfg["model_kw"])
    train_loader = make_loader(ds, train_idx, cfg, device, train=True)
    val_loader = make_loader(ds, val_idx, cfg, device, train=False)
    criterion = build_loss(cfg["loss"], class_counts=class_counts, **cfg["loss_kw"])
    t0 = time.perf_counter()
    history = fit(model, train_loader, val_loader, epochs=cfg["epochs"], optimizer=cfg["optimizer"],
                  lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                  weight_decay=cfg["weight_decay"], schedule=cfg["schedule"],
                  milestones=cfg["milestones"] or (), gamma=cfg["gamma"],
                  warmup_epochs=cfg["warmup_epochs"], criterion=criterion, device=device,
                  out_dir=run_dir, resume=True, config=cfg, seed=cfg["seed"], progress=progress,
                  max_steps=max_steps)
    load_checkpoint(run_dir / "best.pt", model)
    out = {"config": cfg, "params": count_parameters(model), "warning": warn,
           "train_seconds": round(sum(h["seconds"] for h in history), 1),
           "wall_seconds": round(time.perf_counter() - t0, 1), "epochs_run": len(history),
           "best_epoch": int(np.argmax([h["val_acc"] for h in history])) + 1}
    preds = {}
    for split, idx in (("val", val_idx), ("test", test_idx)):
        ld = make_loader(ds, idx, cfg, device, train=False)
        logits, targets = predict(model, ld, device)
        y, pred = targets.numpy(), logits.argmax(1).numpy()
        out[f"{split}_acc"] = float(accuracy(y, pred))
        out[f"{split}_bal_acc"] = float(balanced_accuracy(y, pred))
        out[f"{split}_per_class"] = per_class_accuracy(y, pred, ds.num_classes).tolist()
        preds[f"{split}_logits"], preds[f"{split}_targets"] = logits.numpy(), targets.numpy()
    np.savez_compressed(run_dir / "predictions.npz", **preds)
    write_json(result_path, out)
    return out


def load_predictions(run_dir) -> dict:
    """The val/test logits and targets saved by `run_experiment`."""
    with np.load(Path(run_dir) / "predictions.npz") as z:
        return {k: z[k] for k in z.files}


def summarize(records: list[dict], by=("name",)) -> list[dict]:
    """Mean ± std over seeds of each experiment's val/test accuracy."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r["config"][k] for k in by), []).append(r)
    rows = []
    for key, rs in groups.items():
        row = dict(zip(by, key, strict=True))
        c = rs[0]["config"]
        row.update(model=c["model"], stem=c["stem"], params=rs[0]["params"],
                   optimizer=c["optimizer"], lr=c["lr"], schedule=c["schedule"],
                   augment=c["augment"], loss=c["loss"], epochs=c["epochs"], seeds=len(rs))
        for m in ("val_acc", "test_acc", "val_bal_acc", "test_bal_acc"):
            v = np.array([r[m] for r in rs], dtype=float)
            row[m], row[m + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        row["wall_s"] = float(sum(r["wall_seconds"] for r in rs))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- Task B catalogue

_ADAM = dict(optimizer="adam", lr=1e-3, weight_decay=0.0)
# Every from-scratch experiment of Task B by name; B-ablation's `experiments` parameter picks from
# these. The baseline recipe is the study's: SGD, constant LR, crop + flip. Schedules and the
# augmentation ablation use Adam from lr 1e-3 with the study's MultiStep (×0.2 at 40/60/80 %).
B_EXPERIMENTS: dict[str, dict] = {
    "resnet18": dict(model="resnet18", group="baseline"),
    "resnet34": dict(model="resnet34", group="baseline"),
    "resnet50": dict(model="resnet50", group="baseline"),
    "dlresnet18_5x5_sgd": dict(model="dlresnet18_5x5", group="dlresnet"),
    "dlresnet18_dilated_sgd": dict(model="dlresnet18_dilated", group="dlresnet"),
    "resnet18_adam": dict(model="resnet18", group="dlresnet", **_ADAM),
    "dlresnet18_5x5_adam": dict(model="dlresnet18_5x5", group="dlresnet", **_ADAM),
    "dlresnet18_dilated_adam": dict(model="dlresnet18_dilated", group="dlresnet", **_ADAM),
    "resnext50_32x4d": dict(model="resnext50_32x4d", group="resnext"),
    "resnext18": dict(model="resnext18", group="resnext"),
    "sched_constant": dict(model="resnet18", augment="color", group="schedule", **_ADAM),
    "sched_multistep": dict(model="resnet18", augment="color", schedule="multistep",
                            group="schedule", **_ADAM),
    "sched_cosine": dict(model="resnet18", augment="color", schedule="cosine", group="schedule",
                         **_ADAM),
    "sched_exponential": dict(model="resnet18", augment="color", schedule="exponential",
                              group="schedule", **_ADAM),
    "abl_none_constant": dict(model="resnet18", augment="none", group="ablation", **_ADAM),
    "abl_none_multistep": dict(model="resnet18", augment="none", schedule="multistep",
                               group="ablation", **_ADAM),
    "resnet18_small_stem": dict(model="resnet18", stem="small", group="stem"),
}
# The 2×2 ablation {no aug, crop+flip+colour} × {constant, MultiStep}: the augmented cells are the
# schedule runs, so nothing is trained twice.
ABLATION_CELLS = {("none", "constant"): "abl_none_constant",
                  ("none", "multistep"): "abl_none_multistep",
                  ("color", "constant"): "sched_constant",
                  ("color", "multistep"): "sched_multistep"}
B_REFERENCE = {"resnet18": "B/resnet18", "resnet34": "B/resnet34",
               "dlresnet18_5x5_sgd": "B/dlresnet18_sgd", "dlresnet18_dilated_sgd": "B/dlresnet18_sgd",
               "dlresnet18_5x5_adam": "B/dlresnet18_adam",
               "dlresnet18_dilated_adam": "B/dlresnet18_adam",
               "resnext50_32x4d": "B/resnext50_32x4d", "resnext18": "B/resnext18"}


# The pairs B-ablation's findings compare: (what the comparison is about, run, its baseline).
B_COMPARISONS = [
    ("depth: ResNet-34 vs ResNet-18 (SGD, constant LR)", "resnet34", "resnet18"),
    ("depth: ResNet-50 vs ResNet-18 (SGD, constant LR)", "resnet50", "resnet18"),
    ("dual path, SGD: DLResNet-18 5×5 vs ResNet-18", "dlresnet18_5x5_sgd", "resnet18"),
    ("dual path, SGD: DLResNet-18 dilated vs ResNet-18", "dlresnet18_dilated_sgd", "resnet18"),
    ("dual path, Adam: DLResNet-18 5×5 vs ResNet-18", "dlresnet18_5x5_adam", "resnet18_adam"),
    ("dual path, Adam: DLResNet-18 dilated vs ResNet-18", "dlresnet18_dilated_adam",
     "resnet18_adam"),
    ("optimizer: Adam vs SGD (ResNet-18)", "resnet18_adam", "resnet18"),
    ("grouped convs: ResNeXt-18 vs ResNet-18 (SGD)", "resnext18", "resnet18"),
    ("grouped convs: ResNeXt-50 vs ResNet-50 (SGD)", "resnext50_32x4d", "resnet50"),
    ("LR schedule: MultiStep vs constant (Adam, colour aug.)", "sched_multistep", "sched_constant"),
    ("LR schedule: cosine vs constant (Adam, colour aug.)", "sched_cosine", "sched_constant"),
    ("LR schedule: exponential vs constant (Adam, colour aug.)", "sched_exponential",
     "sched_constant"),
    ("augmentation at constant LR: crop + flip + colour vs none", "sched_constant",
     "abl_none_constant"),
    ("augmentation with MultiStep LR: crop + flip + colour vs none", "sched_multistep",
     "abl_none_multistep"),
    ("LR schedule without augmentation: MultiStep vs constant", "abl_none_multistep",
     "abl_none_constant"),
    ("stem: small (3×3, no max-pool) vs torchvision's (ResNet-18)", "resnet18_small_stem",
     "resnet18"),
]


def b_findings(rows: list[dict], key: str = "val_acc") -> list[str]:
    """What B's runs say, in numbers: one sentence per comparison of `B_COMPARISONS` whose two
    runs are both in `rows` (from `summarize`). The difference is in accuracy points; where both
    sides have several seeds it carries the standard error of the difference and is called
    within noise when smaller than twice that."""
    by = {r["name"]: r for r in rows}
    out = []
    for label, a, b in B_COMPARISONS:
        if a not in by or b not in by:
            continue
        ra, rb = by[a], by[b]
        diff = 100 * (ra[key] - rb[key])
        text = f"{label}: {ra[key]:.4f} vs {rb[key]:.4f}, {diff:+.1f} points"
        if ra["seeds"] > 1 and rb["seeds"] > 1:
            se = 100 * math.sqrt(ra[key + "_std"] ** 2 / ra["seeds"]
                                 + rb[key + "_std"] ** 2 / rb["seeds"])
            verdict = "within noise" if abs(diff) < 2 * se else "beyond 2 standard errors"
            text += f" ± {se:.1f} (n = {ra['seeds']}/{rb['seeds']} seeds; {verdict})"
        else:
            text += " (one seed: no error bar)"
        out.append(text)
    return out


def b_experiment(name: str) -> dict:
    if name not in B_EXPERIMENTS:
        raise ValueError(f"Unknown Task B experiment {name!r}. Known: {', '.join(B_EXPERIMENTS)}")
    return {"name": name, **B_EXPERIMENTS[name]}


# --------------------------------------------------------------------------- Task C: cRT


def retrain_classifier(model, ds, train_idx, cfg: dict, device, *, epochs: int = 10,
                       lr: float = 0.1, batch_size: int = 256, seed: int = 0):
    """Decoupled classifier re-training (cRT, Kang et al. 2020): freeze the backbone, re-initialise
    the last Linear layer and train it alone with class-balanced sampling. Features are computed
    once (no augmentation). Returns the model with its new head (in eval mode)."""
    import torch
    from torch import nn

    from hw2lib.metrics import extract_features

    feats, labels = extract_features(model, make_loader(ds, train_idx, {**cfg, "batch_size": 256},
                                                        device, train=False), device=device)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    gen = torch.Generator().manual_seed(seed)
    new = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():  # seeded re-initialisation
        bound = 1 / head.in_features**0.5
        new.weight.uniform_(-bound, bound, generator=gen)
        new.bias.uniform_(-bound, bound, generator=gen)
    x, y = torch.from_numpy(feats), torch.from_numpy(labels)
    counts = torch.bincount(y, minlength=head.out_features).clamp(min=1).double()
    weights = (1.0 / counts)[y]  # each class equally likely per draw
    opt = torch.optim.SGD(new.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    steps = max(1, len(y) // batch_size)
    for _ in range(epochs):
        for _ in range(steps):
            i = torch.multinomial(weights, batch_size, replacement=True, generator=gen)
            loss = nn.functional.cross_entropy(new(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        head.weight.copy_(new.weight)
        head.bias.copy_(new.bias)
    return model.eval()
