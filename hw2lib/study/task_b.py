"""Task B's logic: which of the from-scratch recipes (`recipes.B_EXPERIMENTS`, both tracks) a
B-ablation run trains, running them, and the tables, curves and findings it shows."""

from __future__ import annotations

import math

import pandas as pd

from hw2lib.nets.models import build_model, count_parameters
from hw2lib.study import stats
from hw2lib.study.levers import KEY, TEST_LABEL, VAL_LABEL, cell, images_of, same_run_levers
from hw2lib.study.levers import lever_table as _lever_table
from hw2lib.study.levers import lever_view as _lever_view
from hw2lib.study.notebook import headline
from hw2lib.study.plots import plot_curves
from hw2lib.study.reference import REF_LABEL, reference_value
from hw2lib.train.executor import run_experiments, split_failed
from hw2lib.train.experiment import summarize
from hw2lib.train.recipes import B_EXPERIMENTS, LEVERS, Recipe, resolve, with_epochs
from hw2lib.train.schedules import recipe_lr_table

SEEDED_GROUPS = ("schedule", "ablation", "best")  # these run with `ablation_seeds`
# The 2×2 ablation {no aug, crop + flip + colour} × {constant, MultiStep} on ResNeXt-18.
ABLATION_CELLS = {("none", "none"): "resnext18_none", ("none", "multistep"): "resnext18_lr_only",
                  ("color", "none"): "resnext18_aug_only", ("color", "multistep"): "resnext18"}
SCHEDULE_RUNS = ("resnext18", "resnext18_cosine", "resnext18_exponential")
# The HW2 report's number for a run of the same protocol (see `reference.REFERENCE`).
REFERENCE_KEY = {"resnet18": "B/resnet18", "resnet34": "B/resnet34",
                 "dlresnet18_5x5_sgd": "B/dlresnet18_sgd",
                 "dlresnet18_dilated_sgd": "B/dlresnet18_sgd",
                 "dlresnet18_5x5_adam": "B/dlresnet18_adam",
                 "dlresnet18_dilated_adam": "B/dlresnet18_adam",
                 "resnext50_32x4d": "B/resnext50_32x4d", "resnext18": "B/resnext18",
                 "resnext18_cosine": "B/resnext18_other_schedules",
                 "resnext18_exponential": "B/resnext18_other_schedules"}
# The pairs B-ablation's findings compare: (what the comparison is about, run, its baseline,
# what the HW2 report says about it or "").
COMPARISONS = [
    ("depth: ResNet-34 vs ResNet-18 (SGD, constant LR)", "resnet34", "resnet18",
     "HW2: almost the same, both ≈ 0.80"),
    ("depth: ResNet-50 vs ResNet-18 (SGD, constant LR)", "resnet50", "resnet18",
     "HW2: ResNet-50 clearly worse"),
    ("dual path, SGD: DLResNet-18 5×5 vs ResNet-18", "dlresnet18_5x5_sgd", "resnet18",
     "HW2: ≈ +2 points"),
    ("dual path, SGD: DLResNet-18 dilated vs ResNet-18", "dlresnet18_dilated_sgd", "resnet18",
     "HW2: ≈ +2 points"),
    ("dual path, SGD: DLResNet-18 dilated vs 5×5", "dlresnet18_dilated_sgd",
     "dlresnet18_5x5_sgd", "HW2: basically the same"),
    ("dual path, Adam: DLResNet-18 dilated vs 5×5", "dlresnet18_dilated_adam",
     "dlresnet18_5x5_adam", "HW2: basically the same"),
    ("optimizer: Adam vs SGD (DLResNet-18 5×5)", "dlresnet18_5x5_adam", "dlresnet18_5x5_sgd",
     "HW2: ≈ +1 point"),
    ("optimizer: Adam vs SGD (DLResNet-18 dilated)", "dlresnet18_dilated_adam",
     "dlresnet18_dilated_sgd", "HW2: ≈ +1 point"),
    ("optimizer: Adam vs SGD (ResNet-18)", "resnet18_adam", "resnet18", ""),
    ("grouped convs: ResNeXt-50 vs ResNet-50 (SGD)", "resnext50_32x4d", "resnet50", ""),
    ("Figure 9: ResNeXt-50 vs DLResNet-18 (both scheduled)", "resnext50_sched",
     "dlresnet18_sched", "HW2: ResNeXt-50 clearly better"),
    ("Figure 10: ResNeXt-50 vs ResNeXt-18 (both scheduled)", "resnext50_sched", "resnext18",
     "HW2: within 0.2–0.3 points"),
    ("LR schedule: cosine vs MultiStep (ResNeXt-18)", "resnext18_cosine", "resnext18",
     "HW2: all ≈ 0.88–0.89, no real change"),
    ("LR schedule: exponential vs MultiStep (ResNeXt-18)", "resnext18_exponential", "resnext18",
     "HW2: all ≈ 0.88–0.89, no real change"),
    ("ablation: augmentation only vs none (ResNeXt-18)", "resnext18_aug_only", "resnext18_none",
     "HW2: ≈ +2 points"),
    ("ablation: LR schedule only vs none (ResNeXt-18)", "resnext18_lr_only", "resnext18_none",
     "HW2: ≈ +2 points"),
    ("ablation: both vs none (ResNeXt-18)", "resnext18", "resnext18_none",
     "HW2: the two together also help"),
    ("ablation: both vs augmentation only", "resnext18", "resnext18_aug_only", ""),
    ("ablation: both vs LR schedule only", "resnext18", "resnext18_lr_only", ""),
    ("the report's final model vs its baseline: ResNeXt-18 (scheduled) vs ResNet-18",
     "resnext18", "resnet18", "HW2: 0.8906 vs ≈ 0.80"),
    *[(f"lever: best recipe vs without {what}", "best", name, "")
      for name, (what, _) in LEVERS.items()],
]


# Experiments that no longer train: what replaced them.
RETIRED = {"best_no_ema": "the EMA lever is read from the `best` runs' raw weights (evaluated each "
                          "epoch beside the EMA's): run `best`"}


def experiment(name: str) -> dict:
    if name in RETIRED:
        raise ValueError(f"Task B experiment {name!r} is not trained any more: {RETIRED[name]}.")
    if name not in B_EXPERIMENTS:
        raise ValueError(f"Unknown Task B experiment {name!r}. Known: {', '.join(B_EXPERIMENTS)}")
    return {"name": name, **B_EXPERIMENTS[name]}


def experiment_names(names) -> list[str]:
    """B-ablation's `experiments` parameter as names: "all" stands for every experiment of the
    catalogue (in its order); each name once."""
    return list(dict.fromkeys(n for item in names
                              for n in (B_EXPERIMENTS if item == "all" else (item,))))


def lever_names() -> list[str]:
    """The best recipe and its leave-one-out variants (the lever runs)."""
    return ["best", *LEVERS]


def configs(p) -> list[Recipe]:
    """The resolved recipe of every (experiment, seed) B-ablation trains with parameters `p` (the
    notebook's: its globals in the notebook, the checked parameters in `hw2 plan`), in order:
    `experiments`, `seeds` (`ablation_seeds` for the seeded groups), `epochs` replacing the
    protocol's epochs of the HW2-protocol runs and `best_epochs` those of the best recipe's,
    `best_stem` the best recipe's stem (None: as in the catalogue), `lr_sgd`, `batch_size`."""
    out = []
    for name in experiment_names(p["experiments"]):
        spec = experiment(name)
        best = spec["track"] == "best"
        if spec.get("optimizer", "sgd") == "sgd" and not best:
            spec.setdefault("lr", p["lr_sgd"])
        if best and p["best_stem"] is not None and name != "best_torchvision_stem":
            spec["stem"] = p["best_stem"]
        spec = with_epochs(spec, p["best_epochs"] if best else p["epochs"])
        for s in p["ablation_seeds"] if spec["group"] in SEEDED_GROUPS else p["seeds"]:
            out.append(resolve(spec, batch_size=p["batch_size"], seed=s))
    return out


def train_caps(p) -> dict:
    """Images per class each track trains on (None: the whole split)."""
    return {"hw2": p["train_per_class"], "best": p["best_train_per_class"]}


def run_all(cfgs: list[dict], ds, idx: dict, run_root, *, device, max_steps=None,
            force: bool = False, executor: str = "local", gpus_per_run: float = 1.0,
            ray_address: str | None = None) -> tuple[list[dict], list[dict]]:
    """Train (or reuse) every configuration on the rows of its track (`idx[track]`: a
    {"train", "val", "test"} mapping per track) through the executor (see `hw2lib.train.executor`).
    Returns (records of the finished runs, each with its `history`; the failed runs)."""
    jobs = [dict(cfg=cfg, ds=ds, run_root=run_root, train_idx=idx[cfg["track"]]["train"],
                 val_idx=idx[cfg["track"]]["val"], test_idx=idx[cfg["track"]]["test"],
                 device=device, max_steps=max_steps, force=force) for cfg in cfgs]
    return split_failed(run_experiments(jobs, executor=executor, gpus_per_run=gpus_per_run,
                                        ray_address=ray_address))


def histories(records: list[dict]) -> dict[str, list[list[dict]]]:
    """Each experiment's histories, one per seed."""
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r["config"]["name"], []).append(r["history"])
    return out


def curves(records: list[dict], names, key: str = "val_acc", title: str | None = None):
    """The named runs' curves in one figure (seed bands where several ran), and a note naming
    those this profile left out. The figure is None when fewer than two ran."""
    by_name = histories(records)
    have = [n for n in names if n in by_name]
    missing = [n for n in names if n not in by_name]
    note = f"Not in this profile's experiment list: {', '.join(missing)}." if missing else ""
    if len(have) < 2:
        return None, note
    fig = plot_curves({n: by_name[n][0] for n in have}, key=key,
                      bands={n: by_name[n] for n in have if len(by_name[n]) > 1})
    if title:
        fig.suptitle(title)
    return fig, note


def lr_curves(epochs: int | None, batch_size: int,
              steps_per_epoch: int = 1) -> dict[str, list[float]]:
    """The LR of each schedule of the comparison (ResNeXt-18): the table `fit` trains with
    (`schedules.lr_table`), one value an optimizer step; with `steps_per_epoch=1` one an epoch
    (these schedules are constant within an epoch)."""
    out = {}
    for n in SCHEDULE_RUNS:
        c = resolve(with_epochs(experiment(n), epochs), batch_size=batch_size, seed=0)
        out[c["schedule"]] = recipe_lr_table(c, steps_per_epoch)
    return out


def ablation_table(rows: list[dict]) -> pd.DataFrame | None:
    """The 2×2 {augmentation} × {LR schedule} table of test accuracy at the val-chosen
    checkpoint (mean ± std over seeds)."""
    by = {r["name"]: r for r in rows}
    cells = {k: v for k, v in ABLATION_CELLS.items() if v in by}
    if not cells:
        return None
    table = pd.DataFrame(index=["no augmentation", "crop + flip + colour"],
                         columns=["constant LR", "MultiStep LR"], dtype=object)
    for (aug, sch), name in cells.items():
        table.loc["no augmentation" if aug == "none" else "crop + flip + colour",
                  "constant LR" if sch == "none" else "MultiStep LR"] = cell(by[name])
    return table.fillna("not run")


def reference_text(r: dict) -> str:
    """The HW2 report's number for this run's protocol — with the epochs it was reached at when
    this run trained fewer (then it is context, not a like-with-like comparison)."""
    key = REFERENCE_KEY.get(r["name"])
    if key is None:
        return "—"
    text = reference_value(key, text=True)
    proto = B_EXPERIMENTS[r["name"]]["epochs"]
    return text if r["epochs"] == proto else f"{text} (at {proto} ep; this run {r['epochs']})"


def results_table(rows: list[dict], csv=None) -> pd.DataFrame:
    """Every experiment, one row: track, recipe, parameters, training images, test accuracy at
    the val-chosen checkpoint and the val maximum that chose it (± std), the HW2 report's number
    (its split, its val accuracy) for the same protocol, time and the run ids (also written to
    `csv`)."""
    def mean_std(r, split):
        m, s = r[f"{split}_acc"], r[f"{split}_acc_std"]
        return f"{m:.4f} ± {s:.4f}" if r["seeds"] > 1 else f"{m:.4f}"

    out = []
    for r in rows:
        out.append({"name": r["name"], "track": B_EXPERIMENTS[r["name"]]["track"],
                    "model": r["model"] + ("" if r["stem"] == "imagenet" else f" ({r['stem']} stem)"),
                    "params": f"{r['params']:,}", "optimizer": f"{r['optimizer']} {r['lr']:g}",
                    "schedule": r["schedule"], "augment": r["augment"], "seeds": r["seeds"],
                    "epochs": r["epochs"], "n_train": _n(r), TEST_LABEL: mean_std(r, "test"),
                    VAL_LABEL: mean_std(r, "val"), REF_LABEL: reference_text(r),
                    "wall s": f"{r['wall_s']:.0f}", "run ids": r["run_ids"]})
    table = pd.DataFrame(out).set_index("name")
    if csv is not None:
        table.to_csv(csv)
    return table


def findings(rows: list[dict], key: str = KEY) -> list[str]:
    """What B's runs say: one sentence per comparison of `COMPARISONS` whose two runs are both in
    `rows` (from `summarize`) — test accuracy at the val-chosen checkpoint, with the 95 % interval
    its design allows (`stats.compare`: paired seeds, Welch, or the paired images interval of one
    seed each) — and what the HW2 report said about it; then the levers that need no training of
    their own (TTA, EMA) and the chosen best recipe vs the HW2 protocol's ResNeXt-18."""
    by = {r["name"]: r for r in rows}
    out = [stats.describe(label, by[a], by[b], key, images_of(key)) + (f" — {claim}" if claim
                                                                       else "")
           for label, a, b, claim in COMPARISONS if a in by and b in by]
    if "best" in by:
        for label, a, b, k in same_run_levers(by["best"]):
            out.append(stats.describe(f"lever: {label}", a, b, k, images_of(k)))
    best = chosen_recipe(rows)
    if best is not None and "resnext18" in by:
        out.append(stats.describe(f"best recipe ({best['name']}, chosen by val) vs the HW2 "
                                  "protocol's ResNeXt-18", best, by["resnext18"], key,
                                  images_of(key)))
    return out


def step_jumps(records: list[dict], window: int = 3) -> list[dict]:
    """The validation accuracy around each drop of the LR in the MultiStep runs: per run and
    step, the mean val accuracy of the `window` epochs after the drop minus that of the `window`
    epochs before it, with a 95 % interval from the number of validation images (the mean of w
    epochs is taken as no better than one epoch's estimate)."""
    out = []
    for r in records:
        hist = r["history"]
        cfg = r["config"]
        if cfg["schedule"] != "multistep" or len(hist) < 2:
            continue
        n = r.get("val_n") or 0
        for i in range(1, len(hist)):
            if not hist[i]["lr"] < hist[i - 1]["lr"] * 0.999:
                continue
            before = [h["val_acc"] for h in hist[max(0, i - window):i]]
            after = [h["val_acc"] for h in hist[i:i + window]]
            a, b = sum(after) / len(after), sum(before) / len(before)
            half = 1.96 * math.sqrt(a * (1 - a) / n + b * (1 - b) / n) if n else math.nan
            out.append({"run": cfg["name"], "seed": cfg["seed"], "epoch": hist[i]["epoch"],
                        "lr": f"{hist[i - 1]['lr']:.2g} → {hist[i]['lr']:.2g}",
                        "val acc before": b, "val acc after": a, "jump (points)": 100 * (a - b),
                        "± 95 % (points)": 100 * half,
                        "verdict": ("not distinguishable at this budget" if not abs(a - b) > half
                                    else "up" if a > b else "down")})
    return out


def step_jumps_table(records: list[dict]):
    """`step_jumps` as a table, and a note when there is none: (DataFrame or None, note)."""
    jumps = step_jumps(records)
    if jumps:
        short = sorted({f"{r['config']['name']} ({r['config']['epochs']} of "
                        f"{B_EXPERIMENTS[r['config']['name']]['epochs']} epochs)" for r in records
                        if r["config"]["schedule"] == "multistep"
                        and r["config"]["name"] in B_EXPERIMENTS
                        and r["config"]["epochs"] < B_EXPERIMENTS[r["config"]["name"]]["epochs"]})
        note = ("" if not short else
                f"Runs shorter than the protocol ({', '.join(short)}): their steps fall in the "
                "first epochs, so these windows also hold ordinary early progress — a jump here "
                "is not the report's effect of an LR step.")
        return pd.DataFrame(jumps).set_index(["run", "seed", "epoch"]).round(4), note
    if any(r["config"]["schedule"] == "multistep" for r in records):
        return None, "No LR step fell within the epochs these MultiStep runs trained."
    return None, "No MultiStep run in this profile's list."


def lever_table(rows: list[dict]) -> pd.DataFrame | None:
    """`levers.lever_table` of B's `LEVERS`: the best recipe and each leave-one-out variant."""
    return _lever_table(rows, LEVERS)


def lever_view(rows: list[dict]):
    """`levers.lever_view` of B's `LEVERS` (styled table, note)."""
    return _lever_view(rows, LEVERS)


def dlresnet_blocks(num_classes: int) -> str:
    """The parameter counts of ResNet-18 and both DLResNet-18s, and one dual-path block."""
    names = ["resnet18", "dlresnet18_5x5", "dlresnet18_dilated"]
    counts = {m: f"{count_parameters(build_model(m, num_classes)):,} parameters" for m in names}
    return f"{counts}\n{build_model('dlresnet18_5x5', num_classes).layer1[0]}"


def chosen_recipe(rows: list[dict]) -> dict | None:
    """Track 2's model: of the best-recipe runs (the recipe and its variants), the one with the
    highest validation accuracy. Its test accuracy is the one reported."""
    cands = [r for r in rows if B_EXPERIMENTS[r["name"]]["track"] == "best"]
    return max(cands, key=lambda r: r["val_acc"]) if cands else None


def track_table(rows: list[dict]) -> pd.DataFrame:
    """The headline comparison, one row per question: HW2 report (its split) | this study, HW2
    protocol | this study, best recipe (chosen by validation). Test accuracy at the val-chosen
    checkpoint is the compared number; the val maximum is the selection metric (the report's
    number is its own val accuracy, on its split); the training images of each side."""
    by = {r["name"]: r for r in rows}
    hw2 = by.get("resnext18")
    best = chosen_recipe(rows)

    def fmt(r, key):
        return "not run" if r is None else cell(r, key)

    col_hw2, col_best = "this study, HW2 protocol (resnext18)", "this study, best recipe"
    return pd.DataFrame([
        {"": f"best from-scratch model, {TEST_LABEL}", REF_LABEL: "not reported",
         col_hw2: fmt(hw2, "test_acc"),
         col_best: fmt(best, "test_acc") + ("" if best is None else f" [{best['name']}]")},
        {"": f"… its {VAL_LABEL}", REF_LABEL: reference_text(hw2) if hw2 else
         "0.8906 (ResNeXt-18, 200 ep)", col_hw2: fmt(hw2, "val_acc"),
         col_best: fmt(best, "val_acc")},
        {"": "… trained on (images)", REF_LABEL: "its split (not stated)",
         col_hw2: "not run" if hw2 is None else _n(hw2),
         col_best: "not run" if best is None else _n(best)},
    ]).set_index("")


def headline_rows(rows: list[dict]) -> list[dict]:
    """The index's rows: every run with a HW2 reference (its val accuracy beside the report's —
    the report's own metric, on its split — only at the protocol's epochs; the test accuracy at
    the val-chosen checkpoint in the note), the ablation cells, and Track 2's chosen model (test
    accuracy)."""
    keep = set(REFERENCE_KEY) | set(ABLATION_CELLS.values()) | {"resnet50", "resnext50_sched",
                                                                 "dlresnet18_sched"}
    out = []
    for r in rows:
        if r["name"] not in keep:
            continue
        key = REFERENCE_KEY.get(r["name"])
        same = r["epochs"] == B_EXPERIMENTS[r["name"]]["epochs"]
        ref = reference_value(key, text=True) if key and same else None
        note = (f"HW2 protocol: {r['optimizer']}, {r['schedule']}, {r['augment']}, "
                f"{r['epochs']} ep, n={r['seeds']}, {_n(r)} training images; test acc "
                f"{r['test_acc']:.4f} (val-chosen checkpoint); val acc is the selection metric")
        if key and same:
            note += "; the HW2 report's number is on its own split"
        if key and not same:
            note += f"; HW2's {reference_text(r)} is not comparable at this budget"
        out.append(headline(f"B {r['name']}: val acc (selection metric)", r["val_acc"], ref,
                            note, run_id=r["run_ids"]))
    best = chosen_recipe(rows)
    if best is not None:
        out.append(headline(f"B best recipe ({best['name']}, chosen by val): test acc",
                            best["test_acc"], None,
                            f"val {best['val_acc']:.4f}, {best['epochs']} ep, n={best['seeds']}, "
                            f"{_n(best)} training images"
                            + (", 8-view TTA" if best.get("val_acc_no_tta") is not None else "")
                            + (f", trained in {best['precision']}" if best.get("precision")
                               else ""),
                            run_id=best["run_ids"]))
    return out


def _n(r: dict) -> str:
    return "?" if not r.get("n_train") else f"{r['n_train']:,}"


__all__ = ["ABLATION_CELLS", "COMPARISONS", "LEVERS", "configs", "experiment_names", "lever_names",
           "train_caps",
           "run_all", "curves", "lr_curves", "ablation_table", "results_table", "findings",
           "step_jumps", "step_jumps_table", "lever_table", "lever_view", "dlresnet_blocks",
           "chosen_recipe", "track_table", "headline_rows",
           "summarize"]
