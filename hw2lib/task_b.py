"""Task B's logic: the catalogue of from-scratch experiments, running them, and the tables,
curves and findings that B-ablation shows."""

from __future__ import annotations

import pandas as pd

from hw2lib import stats
from hw2lib.experiment import experiment_config, run_experiment, summarize
from hw2lib.reference import REFERENCE

_ADAM = dict(optimizer="adam", lr=1e-3, weight_decay=0.0)
# Every from-scratch experiment of Task B by name; B-ablation's `experiments` parameter picks from
# these. The baseline recipe is the study's: SGD, constant LR, crop + flip. Schedules and the
# augmentation ablation use Adam from lr 1e-3 with the study's MultiStep (×0.2 at 40/60/80 %).
EXPERIMENTS: dict[str, dict] = {
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
SEEDED_GROUPS = ("schedule", "ablation")  # these run with `ablation_seeds`
# The 2×2 ablation {no aug, crop+flip+colour} × {constant, MultiStep}: the augmented cells are the
# schedule runs, so nothing is trained twice.
ABLATION_CELLS = {("none", "constant"): "abl_none_constant",
                  ("none", "multistep"): "abl_none_multistep",
                  ("color", "constant"): "sched_constant",
                  ("color", "multistep"): "sched_multistep"}
# The HW2 report's number for a run of the same recipe.
REFERENCE_KEY = {"resnet18": "B/resnet18", "resnet34": "B/resnet34",
                 "dlresnet18_5x5_sgd": "B/dlresnet18_sgd",
                 "dlresnet18_dilated_sgd": "B/dlresnet18_sgd",
                 "dlresnet18_5x5_adam": "B/dlresnet18_adam",
                 "dlresnet18_dilated_adam": "B/dlresnet18_adam",
                 "resnext50_32x4d": "B/resnext50_32x4d", "resnext18": "B/resnext18"}
# The pairs B-ablation's findings compare: (what the comparison is about, run, its baseline).
COMPARISONS = [
    ("depth: ResNet-34 vs ResNet-18 (SGD, constant LR)", "resnet34", "resnet18"),
    ("depth: ResNet-50 vs ResNet-18 (SGD, constant LR)", "resnet50", "resnet18"),
    ("dual path, SGD: DLResNet-18 5×5 vs ResNet-18", "dlresnet18_5x5_sgd", "resnet18"),
    ("dual path, SGD: DLResNet-18 dilated vs ResNet-18", "dlresnet18_dilated_sgd", "resnet18"),
    ("dual path, SGD: DLResNet-18 dilated vs 5×5", "dlresnet18_dilated_sgd",
     "dlresnet18_5x5_sgd"),
    ("dual path, Adam: DLResNet-18 5×5 vs ResNet-18", "dlresnet18_5x5_adam", "resnet18_adam"),
    ("dual path, Adam: DLResNet-18 dilated vs ResNet-18", "dlresnet18_dilated_adam",
     "resnet18_adam"),
    ("optimizer: Adam vs SGD (ResNet-18)", "resnet18_adam", "resnet18"),
    ("grouped convs: ResNeXt-18 vs ResNet-18 (SGD)", "resnext18", "resnet18"),
    ("grouped convs: ResNeXt-50 vs ResNet-50 (SGD)", "resnext50_32x4d", "resnet50"),
    ("ResNeXt-50 vs ResNeXt-18 (SGD)", "resnext50_32x4d", "resnext18"),
    ("LR schedule: MultiStep vs constant (Adam, colour aug.)", "sched_multistep", "sched_constant"),
    ("LR schedule: cosine vs constant (Adam, colour aug.)", "sched_cosine", "sched_constant"),
    ("LR schedule: exponential vs constant (Adam, colour aug.)", "sched_exponential",
     "sched_constant"),
    ("LR schedule: cosine vs MultiStep (Adam, colour aug.)", "sched_cosine", "sched_multistep"),
    ("LR schedule: exponential vs MultiStep (Adam, colour aug.)", "sched_exponential",
     "sched_multistep"),
    ("augmentation at constant LR: crop + flip + colour vs none", "sched_constant",
     "abl_none_constant"),
    ("augmentation with MultiStep LR: crop + flip + colour vs none", "sched_multistep",
     "abl_none_multistep"),
    ("LR schedule without augmentation: MultiStep vs constant", "abl_none_multistep",
     "abl_none_constant"),
    ("both (augmentation + MultiStep) vs neither", "sched_multistep", "abl_none_constant"),
    ("stem: small (3×3, no max-pool) vs torchvision's (ResNet-18)", "resnet18_small_stem",
     "resnet18"),
]


def experiment(name: str) -> dict:
    if name not in EXPERIMENTS:
        raise ValueError(f"Unknown Task B experiment {name!r}. Known: {', '.join(EXPERIMENTS)}")
    return {"name": name, **EXPERIMENTS[name]}


def configs(names, *, seeds, ablation_seeds, epochs: int, batch_size: int,
            lr_sgd: float) -> list[dict]:
    """The resolved recipe of every (experiment, seed) to run, in order."""
    out = []
    for name in names:
        spec = experiment(name)
        if spec.get("optimizer", "sgd") == "sgd":
            spec.setdefault("lr", lr_sgd)
        for s in ablation_seeds if spec["group"] in SEEDED_GROUPS else seeds:
            out.append(experiment_config(spec, epochs=epochs, batch_size=batch_size, seed=s))
    return out


def run_all(cfgs: list[dict], ds, idx: dict, run_root, *, device, max_steps=None,
            force: bool = False) -> list[dict]:
    """Train (or reuse) every configuration; each record gets its `history`."""
    from hw2lib.engine import read_history

    records = []
    for cfg in cfgs:
        print(f"— {cfg['name']} (seed {cfg['seed']}): {cfg['model']}, stem {cfg['stem']}, "
              f"{cfg['optimizer']} lr {cfg['lr']}, schedule {cfg['schedule']}, "
              f"augment {cfg['augment']}", flush=True)
        rec = run_experiment(cfg, ds, run_root, train_idx=idx["train"], val_idx=idx["val"],
                             test_idx=idx["test"], device=device, max_steps=max_steps,
                             force=force)
        print(f"  run {rec['run_id']}: val {rec['val_acc']:.4f}, test {rec['test_acc']:.4f}"
              f"{' (reused)' if rec['reused'] else ''}", flush=True)
        records.append({**rec, "history": read_history(rec["run_dir"])})
    return records


def histories(records: list[dict]) -> dict[str, list[list[dict]]]:
    """Each experiment's histories, one per seed."""
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r["config"]["name"], []).append(r["history"])
    return out


def curves(records: list[dict], names, key: str = "val_acc", title: str | None = None):
    """The named runs' curves in one figure (seed bands where several ran), and a note naming
    those this profile left out. The figure is None when fewer than two ran."""
    from hw2lib.plots import plot_curves

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


def lr_curves(epochs: int, batch_size: int) -> dict[str, list[float]]:
    """The learning rate per epoch of each schedule experiment."""
    from hw2lib.engine import lr_schedule

    out = {}
    for n in ("sched_constant", "sched_multistep", "sched_cosine", "sched_exponential"):
        c = experiment_config(experiment(n), epochs=epochs, batch_size=batch_size, seed=0)
        out[c["schedule"]] = lr_schedule(c["schedule"], lr=c["lr"], epochs=epochs,
                                         milestones=c["milestones"] or (), gamma=c["gamma"])
    return out


def ablation_table(rows: list[dict]) -> pd.DataFrame | None:
    """The 2×2 {augmentation} × {LR schedule} table of val accuracy (mean ± std over seeds)."""
    by = {r["name"]: r for r in rows}
    cells = {k: v for k, v in ABLATION_CELLS.items() if v in by}
    if not cells:
        return None
    table = pd.DataFrame(index=["no augmentation", "crop + flip + colour"],
                         columns=["constant LR", "MultiStep LR"], dtype=object)
    for (aug, sch), name in cells.items():
        r = by[name]
        table.loc["no augmentation" if aug == "none" else "crop + flip + colour",
                  "constant LR" if sch == "constant" else "MultiStep LR"] = (
            f"{r['val_acc']:.4f} ± {r['val_acc_std']:.4f} (n={r['seeds']})" if r["seeds"] > 1
            else f"{r['val_acc']:.4f} (one seed)")
    return table.fillna("not run")


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Every experiment, one row: recipe, parameters, val/test accuracy (± std), the HW2
    report's number for the same recipe, time and the run ids."""
    def mean_std(r, split):
        m, s = r[f"{split}_acc"], r[f"{split}_acc_std"]
        return f"{m:.4f} ± {s:.4f}" if r["seeds"] > 1 else f"{m:.4f}"

    out = []
    for r in rows:
        ref = REFERENCE.get(REFERENCE_KEY.get(r["name"], ""))
        out.append({"name": r["name"],
                    "model": r["model"] + ("" if r["stem"] == "imagenet" else f" ({r['stem']} stem)"),
                    "params": f"{r['params']:,}", "optimizer": f"{r['optimizer']} {r['lr']:g}",
                    "schedule": r["schedule"], "augment": r["augment"], "seeds": r["seeds"],
                    "epochs": r["epochs"], "val acc": mean_std(r, "val"),
                    "test acc": mean_std(r, "test"),
                    "HW2 report": "—" if ref is None else f"{ref:.4f}",
                    "wall s": f"{r['wall_s']:.0f}", "run ids": r["run_ids"]})
    return pd.DataFrame(out).set_index("name")


def findings(rows: list[dict], key: str = "val_acc") -> list[str]:
    """What B's runs say: one sentence per comparison of `COMPARISONS` whose two runs are both in
    `rows` (from `summarize`), with a 95 % interval (seeds, or the evaluated images)."""
    by = {r["name"]: r for r in rows}
    return [stats.describe(label, by[a], by[b], key)
            for label, a, b in COMPARISONS if a in by and b in by]


def headline_rows(rows: list[dict]) -> list[dict]:
    """The index's rows: every run with a HW2 reference, the ablation cells and the extras."""
    from hw2lib.notebook import headline

    keep = set(REFERENCE_KEY) | set(ABLATION_CELLS.values()) | {"resnet50", "resnet18_small_stem"}
    out = []
    for r in rows:
        if r["name"] not in keep:
            continue
        note = f"{r['optimizer']}, {r['schedule']}, {r['augment']}, {r['epochs']} ep, n={r['seeds']}"
        out.append(headline(f"B {r['name']}: val acc", r["val_acc"],
                            REFERENCE.get(REFERENCE_KEY.get(r["name"], "")), note,
                            run_id=r["run_ids"]))
    return out


__all__ = ["EXPERIMENTS", "ABLATION_CELLS", "COMPARISONS", "configs", "run_all", "curves",
           "lr_curves", "ablation_table", "results_table", "findings", "headline_rows",
           "summarize"]
