"""`hw2 plan`: every training a report would run, resolved — notebook, experiment, track, model,
recipe (optimizer, lr, schedule with milestones, epochs, augmentation, loss, data, long-tail
counts) and image-steps — without training anything or reading the images.

The recipes come from the same functions the notebooks call (`task_a.config`, `task_b.configs`,
`task_c.configs`) with the report's checked parameters (`run.plan_parameters`).
Training-set sizes are computed from EuroSAT's class sizes and the split fractions (the split is
stratified, so they are exact); for another ImageFolder they are unknown (None) until `hw2 data`.
"""

from __future__ import annotations

import functools

import numpy as np

from hw2lib.core.constants import NOTEBOOKS, SCHEDULE_LABELS, SPLIT_FRACTIONS
from hw2lib.train.recipes import DEFAULTS, SETTINGS


@functools.cache
def eurosat_split_sizes() -> tuple[tuple[int, int, int], ...]:
    """(train, val, test) images of each EuroSAT class, in class-index order: the stratified
    split's exact sizes, from the class sizes alone."""
    from hw2lib.data.sources import EUROSAT_CLASSES, EUROSAT_COUNTS
    from hw2lib.data.splits import _split_sizes

    return tuple(tuple(_split_sizes(EUROSAT_COUNTS[c], SPLIT_FRACTIONS)) for c in EUROSAT_CLASSES)


def eurosat_train_counts() -> list[int]:
    """Training images per class (class-index order) of the stratified EuroSAT split."""
    return [s[0] for s in eurosat_split_sizes()]


def _capped(counts, cap) -> list[int] | None:
    if counts is None:
        return None
    return [int(n if cap is None else min(n, cap)) for n in counts]


def _eval_sizes(p: dict) -> tuple[int | None, int | None]:
    """Validation and test images of a notebook's runs (EuroSAT's split, capped per class)."""
    if p.get("image_folder"):
        return None, None
    return tuple(sum(s[k] if cap is None else min(s[k], cap) for s in eurosat_split_sizes())
                 for k, cap in ((1, p.get("val_per_class")), (2, p.get("test_per_class"))))


def _row(nb: str, cfg: dict, per_class, max_steps, long_tail=None, n_eval=(None, None)) -> dict:
    n_train = None if per_class is None else int(sum(per_class))
    steps = None
    if n_train is not None:
        per_epoch = n_train if max_steps is None else min(n_train,
                                                           int(max_steps) * cfg["batch_size"])
        steps = cfg["epochs"] * per_epoch
    n_val, n_test = n_eval
    return {"notebook": nb, "track": cfg.get("track", "hw2"), **cfg, "n_train": n_train,
            "train_per_class": per_class, "long_tail": long_tail, "image_steps": steps,
            "n_val": n_val, "n_test": n_test}


def trainings(nb: str, p: dict) -> list[dict]:
    """The trainings notebook `nb` runs with parameters `p` (every parameter resolved): the
    recipes of the task's own `config(s)`, the function its notebook calls."""
    from hw2lib.study import task_a, task_b, task_c

    train = None if p.get("image_folder") else eurosat_train_counts()
    ev, ms = _eval_sizes(p), p.get("max_steps")
    if nb == "A-train":
        return [_row(nb, task_a.config(p), _capped(train, p["train_per_class"]), ms, n_eval=ev)]
    if nb == "B-ablation":
        caps = task_b.train_caps(p)

        def n_eval(key):
            v, te = task_b.eval_caps(p, key)
            return _eval_sizes({**p, "val_per_class": v, "test_per_class": te})

        return [_row(nb, c, _capped(train, caps[task_b.rows_key(c)]), ms,
                     n_eval=n_eval(task_b.rows_key(c))) for c in task_b.configs(p)]
    if nb == "C-longtail":
        counts = None if train is None else long_tail_counts(train, p)
        return [_row(nb, c, counts, ms, long_tail=p["long_tail"], n_eval=ev)
                for c in task_c.configs(p)]
    return []  # A-vis trains nothing


def long_tail_counts(train_counts, p: dict) -> list[int]:
    """C-longtail's per-class training counts, drawn by `task_c.long_tail_counts` from EuroSAT's
    class sizes."""
    from hw2lib.data import EUROSAT_CLASSES
    from hw2lib.study.task_c import long_tail_counts as draw
    from hw2lib.study.task_c import tail_settings

    labels = np.repeat(np.arange(len(train_counts)), train_counts)
    return draw(EUROSAT_CLASSES, labels, **tail_settings(p))[1]


def plan(profile: str, names=None, overrides: dict | None = None) -> list[dict]:
    """Every training of `hw2 report --profile profile [--only names] [-p …]`, in run order."""
    from hw2lib.report.run import notebook_parameters, plan_parameters

    names = list(names or NOTEBOOKS)
    params = plan_parameters(profile, names, overrides or {})
    out = []
    for nb in names:
        defaults = {k: p.default for k, p in notebook_parameters(nb).items()}
        out += trainings(nb, {**defaults, **params[nb]})
    return out


# The settings `table` shows even where every row has them at their defaults.
TABLE_ALWAYS = ("epochs", "model", "stem", "optimizer", "lr", "weight_decay", "schedule",
                "milestones", "warmup_epochs", "batch_size", "augment", "loss")


def table(cfgs: list[dict], ds, train_rows, max_steps=None, long_tail=None):
    """The resolved recipes a notebook is about to train, as a DataFrame: the rows `hw2 plan`
    prints, with the training counts read from the dataset rows (`train_rows`: one array, or
    one per track). Its columns: the key settings (`TABLE_ALWAYS`) and every other recipe
    setting that some row sets away from its default (so a new recipe field shows where used)."""
    import pandas as pd

    from hw2lib.study.task_b import rows_key

    def per_class(cfg):
        rows = train_rows[rows_key(cfg)] if isinstance(train_rows, dict) else train_rows
        return np.bincount(ds.y[rows].numpy(), minlength=ds.num_classes).tolist()

    out = [_row("", c, per_class(c), max_steps, long_tail) for c in cfgs]
    used = [k for k in SETTINGS if k in TABLE_ALWAYS or any(r[k] != DEFAULTS[k] for r in out)]
    t = pd.DataFrame(out)[["name", "seed", "track", *used, "n_train", "image_steps"]]
    for col in ("milestones", "loss_kw", "resize"):  # lists, dicts and None as short text
        if col in t:
            t[col] = t[col].map(lambda v: "" if v in (None, {}, []) else str(v))
    return t.set_index(["name", "seed"])


# Time estimates (`hw2 plan --time`) live in bench/estimate.py, beside the benchmark they repeat.


def summary(rows: list[dict]) -> dict:
    """Trainings and image-steps per notebook and track, and in all."""
    out: dict = {}
    for r in rows:
        key = f"{r['notebook']} / {r['track']}"
        s = out.setdefault(key, {"trainings": 0, "image_steps": 0})
        s["trainings"] += 1
        s["image_steps"] = (None if s["image_steps"] is None or r["image_steps"] is None
                            else s["image_steps"] + r["image_steps"])
    return out


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


# The settings `format_plan` writes in its own words; any other one is written "name value" where
# it differs from the recipe's default (so a new recipe field shows without touching this file).
SHOWN = {"model", "optimizer", "lr", "weight_decay", "schedule", "milestones", "gamma",
         "warmup_epochs", "epochs", "batch_size", "augment", "stem", "pretrained", "resize", "mix",
         "ema", "tta", "loss", "loss_kw"}


def format_plan(rows: list[dict]) -> str:
    """The plan as text: one line per training, then the totals."""
    lines = []
    for nb in dict.fromkeys(r["notebook"] for r in rows):
        lines.append(f"\n{nb}")
        for r in (r for r in rows if r["notebook"] == nb):
            sched = r["schedule"]
            if sched == "onecycle":  # the config value's name; what it is
                sched += f" ({SCHEDULE_LABELS[sched]})"
            if sched == "multistep":
                sched += f" {r['milestones']} ×{r['gamma']:g}"
            if r["warmup_epochs"]:
                sched += f" (+{r['warmup_epochs']} warm-up)"
            extras = [x for x in (
                f"stem {r['stem']}" if r["stem"] != "imagenet" else "",
                "ImageNet init" if r["pretrained"] else "",
                f"resize {r['resize']}" if r["resize"] else "",
                f"mix {r['mix']}" if r["mix"] != "none" else "",
                f"EMA {r['ema']:g}" if r["ema"] else "",
                "TTA ×8" if r["tta"] else "",
                f"loss {r['loss']}" + (f" {r['loss_kw']}" if r["loss_kw"] else ""),
                *(f"{k} {r[k]}" for k in SETTINGS if k not in SHOWN and r[k] != DEFAULTS[k]),
            ) if x]
            data = "n_train ?" if r["n_train"] is None else f"n_train {r['n_train']:,}"
            if r["long_tail"]:
                data += f" ({r['long_tail']} tail {r['train_per_class']})"
            steps = "?" if r["image_steps"] is None else f"{r['image_steps']:,}"
            steps += " image-steps"
            if r.get("est_seconds") is not None:
                steps += f" ≈ {format_seconds(r['est_seconds'])}"
            lines.append(
                f"  {r['name']:<28} s{r['seed']} [{r['track']}] {r['model']}: {r['optimizer']} "
                f"lr {r['lr']:g} wd {r['weight_decay']:g}, {sched}, {r['epochs']} ep, "
                f"bs {r['batch_size']}, aug {r['augment']}, {', '.join(extras)}; {data}; "
                f"{steps}")
    lines.append("")
    for key, s in summary(rows).items():
        steps = "?" if s["image_steps"] is None else f"{s['image_steps']:,}"
        lines.append(f"{key:<28} {s['trainings']:>4} trainings  {steps:>14} image-steps")
    total = sum(r["image_steps"] or 0 for r in rows)
    lines.append(f"{'total':<28} {len(rows):>4} trainings  {total:>14,} image-steps")
    return "\n".join(lines)
