"""Task C's logic: the long-tailed training set, the backbones × losses to train, the post-hoc
and classifier re-training remedies, and the table, figures and findings C-longtail shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from hw2lib.data import long_tail_indices
from hw2lib.nets import metrics
from hw2lib.nets.features import extract_features
from hw2lib.nets.losses import posthoc_logit_adjust
from hw2lib.nets.nn_utils import last_linear
from hw2lib.study import stats
from hw2lib.study.notebook import headline
from hw2lib.study.plots import plot_confusions
from hw2lib.study.reference import REF_LABEL, reference_value
from hw2lib.train.engine import predict, predict_tta
from hw2lib.train.executor import run_experiments, split_failed
from hw2lib.train.experiment import load_predictions, load_trained, make_loader
from hw2lib.train.recipes import Recipe, c_backbones, resolve, with_epochs

# The HW2 report's long tail, reconstructed: its text names classes 4, 6 and 7 (1-based:
# Highway, Pasture, PermanentCrop) as the tail, seen 19, 10 and 36 times in training. It gives no
# count for the other seven classes (its matrix does not make them perfect either: River 0.833,
# SeaLake 0.904), so they are taken at their full train-split counts — a reconstruction.
HW2_TAIL = {"Highway": 19, "Pasture": 10, "PermanentCrop": 36}
LONG_TAILS = ("hw2", "exponential")
# Post-hoc logit adjustment: τ is chosen on validation (balanced accuracy) from this grid.
POSTHOC_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
# Two losses with the same objective: logit adjustment at τ = 1 is Balanced Softmax (log π_j and
# log n_j differ by the constant log Σn, which cancels in the softmax), so it is not trained beside
# it; the τ ≠ 1 family is covered by post-hoc adjustment with τ chosen on validation.
SAME_OBJECTIVE = {"logit_adjusted": "balanced_softmax"}


def hw2_counts(classes, train_labels, *, head_cap: int | None = None) -> list[int]:
    """Per-class training counts of the `hw2` preset: the report's three tail classes at 19, 10
    and 36 images, the others at their full count (at most `head_cap` when given)."""
    missing = sorted(set(HW2_TAIL) - set(classes))
    if missing:
        raise ValueError(f"the 'hw2' long tail names EuroSAT classes {sorted(HW2_TAIL)}; this "
                         f"dataset lacks {missing}. Use long_tail='exponential' or lt_counts.")
    avail = np.bincount(np.asarray(train_labels), minlength=len(classes))
    return [int(HW2_TAIL[c]) if c in HW2_TAIL else
            int(avail[i] if head_cap is None else min(head_cap, avail[i]))
            for i, c in enumerate(classes)]


def long_tail_counts(classes, train_labels, *, preset: str = "exponential", rho=100.0,
                     n_max=None, lt_seed=0, lt_counts=None) -> tuple[np.ndarray, list[int]]:
    """Which of the train rows (positions into `train_labels`) the long tail keeps, and the
    per-class training counts. `preset`: "hw2" (the report's tail, `n_max` capping the head
    classes) or "exponential" (ρ profile); `lt_counts` (one count per class) replaces either."""
    if preset not in LONG_TAILS:
        raise ValueError(f"unknown long tail {preset!r}; choose one of {LONG_TAILS}")
    labels = np.asarray(train_labels)
    if lt_counts is None and preset == "hw2":
        lt_counts = hw2_counts(classes, labels, head_cap=n_max)
    return long_tail_indices(labels, len(classes), rho=rho, n_max=n_max, seed=lt_seed,
                             counts=lt_counts)


def long_tail(ds, idx: dict, p) -> tuple[dict, list[int]]:
    """`idx` with its train rows made long-tailed as C-longtail's parameters `p` say
    (`long_tail`, `rho`, `n_max`, `lt_seed`, `lt_counts`: see `long_tail_counts`); the per-class
    training counts."""
    train = idx["train"]
    pos, counts = long_tail_counts(ds.classes, ds.y[train].numpy(), **tail_settings(p))
    return {**idx, "train": train[pos]}, counts


def tail_settings(p) -> dict:
    return dict(preset=p["long_tail"], rho=p["rho"], n_max=p["n_max"], lt_seed=p["lt_seed"],
                lt_counts=p["lt_counts"])


def catalogue(p) -> dict:
    """C's backbones with the notebook's `lr_pretrained` and `pretrained_resize`."""
    return c_backbones(lr_pretrained=p["lr_pretrained"], pretrained_resize=p["pretrained_resize"])


def configs(p) -> list[Recipe]:
    """The resolved recipe of every backbone × loss C-longtail trains with parameters `p` (the
    notebook's: its globals in the notebook, the checked parameters in `hw2 plan`), in order:
    `backbones`, `losses`, `epochs` replacing the protocol's epochs of the HW2-protocol
    backbones and `best_epochs` those of the best recipe, `best_stem`, `batch_size`, `seed`."""
    cat, names, losses = catalogue(p), list(p["backbones"]), list(p["losses"])
    unknown = set(names) - set(cat)
    if unknown:
        raise ValueError(f"unknown backbone(s) {sorted(unknown)}; choose from {list(cat)}")
    for loss, twin in SAME_OBJECTIVE.items():
        if loss in losses and twin in losses:
            raise ValueError(f"losses {loss!r} and {twin!r} are the same objective (logit "
                             f"adjustment at τ = 1 is Balanced Softmax: log π and log n differ "
                             f"by a constant): drop {loss!r} from `losses` (post-hoc adjustment "
                             f"covers τ ≠ 1, chosen on validation)")
    out = []
    for bb in names:
        spec = dict(cat[bb])
        best = spec.get("track") == "best"
        if best and p["best_stem"] is not None:
            spec["stem"] = p["best_stem"]
        spec = with_epochs(spec, p["best_epochs"] if best else p["epochs"])
        for loss in losses:
            out.append(resolve(dict(name=f"{bb}_{loss}", loss=loss, group=bb, **spec),
                               batch_size=p["batch_size"], seed=p["seed"]))
    return out


def run_all(ds, idx: dict, counts, run_root, cfgs: list[dict], *, device, weights=None,
            allow_random_init=False, max_steps=None, force=False, executor: str = "local",
            gpus_per_run: float = 1.0, ray_address: str | None = None) -> tuple[dict, list]:
    """Train (or reuse) every configuration through the executor (see `hw2lib.train.executor`);
    ({(backbone, loss): result with `history` and `predictions`}, the failed runs)."""
    jobs = [dict(cfg=cfg, ds=ds, run_root=run_root, train_idx=idx["train"], val_idx=idx["val"],
                 test_idx=idx["test"], device=device, class_counts=counts, weights=weights,
                 allow_random_init=allow_random_init, max_steps=max_steps, force=force)
            for cfg in cfgs]
    done, failed = split_failed(run_experiments(jobs, executor=executor,
                                                gpus_per_run=gpus_per_run,
                                                ray_address=ray_address))
    results = {(r["config"]["group"], r["config"]["loss"]): {
        **r, "predictions": load_predictions(r["run_folder"])} for r in done}
    return results, failed


# Per-image arrays of a score row (for paired intervals), not table columns.
ARRAYS = ("test_per_class", "val_pred", "val_targets", "test_pred", "test_targets")


def scores(logits_val, y_val, logits_test, y_test, counts, num_classes: int) -> dict:
    """Accuracy and balanced accuracy on val and test; many/medium/few-shot and per-class test
    accuracy; the predictions and targets (`<split>_pred`, `<split>_targets`)."""
    out = {}
    for split, lg, y in (("val", logits_val, y_val), ("test", logits_test, y_test)):
        pred = np.asarray(lg).argmax(1)
        out[f"{split}_pred"], out[f"{split}_targets"] = pred, np.asarray(y)
        out[f"{split}_acc"] = metrics.accuracy(y, pred)
        out[f"{split}_bal_acc"] = metrics.balanced_accuracy(y, pred)
        out[f"{split}_n"] = len(y)
        if split == "test":
            for g, v in metrics.group_accuracy(y, pred, counts).items():
                out[f"test_{g}"] = v
            out["test_per_class"] = metrics.per_class_accuracy(y, pred, num_classes)
    return out


def retrain_classifier(model, ds, train_idx, cfg: dict, device, *, epochs: int = 10,
                       lr: float = 0.1, batch_size: int = 256, seed: int = 0):
    """Decoupled classifier re-training (cRT, Kang et al. 2020): freeze the backbone, re-initialise
    the last Linear layer and train it alone with class-balanced sampling. Features are computed
    once (no augmentation). Returns the model with its new head (in eval mode)."""
    loader = make_loader(ds, train_idx, cfg, device, train=False, batch_size=batch_size)
    feats, labels = extract_features(model, loader, device=device)
    _, head = last_linear(model)
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


def posthoc_tau_on_val(logits_val, y_val, counts, taus=POSTHOC_TAUS) -> float:
    """The τ of `taus` whose post-hoc adjustment gives the highest validation balanced accuracy
    (ties: the smaller τ)."""
    lg = torch.from_numpy(np.asarray(logits_val))
    bal = [metrics.balanced_accuracy(y_val, posthoc_logit_adjust(lg, counts, tau=t).argmax(1)
                                     .numpy()) for t in taus]
    return float(taus[int(np.argmax(bal))])


def method_scores(results: dict, ds, idx: dict, counts, *, posthoc_tau: float | None,
                  crt_epochs: int, seed: int, device) -> dict:
    """Scores of every trained (backbone, loss), plus, for each backbone's CE model, post-hoc
    logit adjustment (τ = `posthoc_tau`, or None: chosen on validation from `POSTHOC_TAUS`) and
    (when `crt_epochs`) cRT, scored like its row neighbours (8-view TTA when the recipe has it).
    Keys: (backbone, method)."""
    k = ds.num_classes
    rows = {}
    for key, res in results.items():
        p = res["predictions"]
        rows[key] = scores(p["val_logits"], p["val_targets"], p["test_logits"], p["test_targets"],
                           counts, k)
    for bb in dict.fromkeys(b for b, _ in results):
        if (bb, "ce") not in results:
            continue
        res = results[(bb, "ce")]
        p = res["predictions"]
        tau, how = posthoc_tau, ""
        if tau is None:
            tau = posthoc_tau_on_val(p["val_logits"], p["val_targets"], counts)
            how = f", chosen on val from {POSTHOC_TAUS[0]:g}–{POSTHOC_TAUS[-1]:g}"
        adj = {s: posthoc_logit_adjust(torch.from_numpy(p[f"{s}_logits"]), counts,
                                       tau=tau).numpy() for s in ("val", "test")}
        rows[(bb, f"posthoc (τ={tau:g}{how})")] = scores(
            adj["val"], p["val_targets"], adj["test"], p["test_targets"], counts, k)
        if crt_epochs:
            cfg = res["config"]
            model, _ = load_trained(f"{res['run_folder']}/best.pt", device)
            retrain_classifier(model, ds, idx["train"], cfg, device, epochs=crt_epochs, seed=seed)
            lg = {s: (predict_tta if cfg.get("tta") else predict)(
                      model, make_loader(ds, idx[s], cfg, device, train=False), device)
                  for s in ("val", "test")}
            rows[(bb, "cRT")] = scores(lg["val"][0], lg["val"][-1].numpy(), lg["test"][0],
                                       lg["test"][-1].numpy(), counts, k)
    return rows


def table(rows: dict, csv=None) -> pd.DataFrame:
    """One row per (backbone, method), each backbone's methods together (also written to
    `csv`)."""
    order = [k for bb in dict.fromkeys(b for b, _ in rows) for k in rows if k[0] == bb]
    t = pd.DataFrame({k: {m: v for m, v in rows[k].items() if m not in ARRAYS}
                      for k in order}).T
    t.index.names = ["backbone", "method"]
    if csv is not None:
        t.to_csv(csv)
    return t


def per_class_by_backbone(rows: dict) -> dict[str, dict[str, list]]:
    """Per backbone, each method's per-class test accuracy (for the accuracy-vs-count figure)."""
    out: dict[str, dict] = {}
    for (bb, m), r in rows.items():
        out.setdefault(bb, {})[m] = r["test_per_class"]
    return out


def confusions(results: dict, split: str = "test") -> dict[str, dict[str, np.ndarray]]:
    """Per backbone, the confusion matrices of cross-entropy and Balanced Softmax on `split`,
    each titled with its accuracy on that split; on val also with the plain cross-entropy of the
    saved (best-checkpoint) logits — the same loss for every method, named as such (each method's
    own training loss would not be comparable: Balanced Softmax's is CE on shifted logits)."""
    out: dict[str, dict] = {}
    for (bb, loss), res in results.items():
        if loss in ("ce", "balanced_softmax"):
            p = res["predictions"]
            k = p[f"{split}_logits"].shape[1]
            pred = p[f"{split}_logits"].argmax(1)
            acc = metrics.accuracy(p[f"{split}_targets"], pred)
            title = f"{loss}: {split} acc {acc:.4f}"
            if split == "val":
                ce = torch.nn.functional.cross_entropy(
                    torch.from_numpy(np.asarray(p["val_logits"], dtype=np.float32)),
                    torch.from_numpy(np.asarray(p["val_targets"], dtype=np.int64))).item()
                title = (f"{loss} — validation: plain cross-entropy {ce:.4f}, acc {acc:.4f}")
            out.setdefault(bb, {})[title] = metrics.confusion_matrix(p[f"{split}_targets"],
                                                                     pred, k)
    return out


def confusion_figures(results: dict, split: str, classes) -> list:
    """`confusions` of each backbone as one figure each (cross-entropy beside Balanced Softmax)."""
    return [plot_confusions(cms, classes, title=bb)
            for bb, cms in confusions(results, split).items()]


def _images(row: dict, seed):
    """`stats.ImagesFn` of C's score rows: each row holds its own test predictions."""
    return row["test_pred"] == row["test_targets"], row["test_targets"]


def findings(rows: dict, t: pd.DataFrame) -> list[str]:
    """CE → Balanced Softmax per backbone (test accuracy and balanced accuracy at the
    val-chosen checkpoint, each with the paired 95 % interval of one run each on the same test
    images — evaluation noise only), few/many-shot test accuracy, and each backbone's best and
    worst method (chosen by val balanced accuracy, compared on test balanced accuracy)."""
    lines = []
    for bb in dict.fromkeys(b for b, _ in rows):
        if (bb, "ce") in rows and (bb, "balanced_softmax") in rows:
            ce, bs = rows[(bb, "ce")], rows[(bb, "balanced_softmax")]
            lines.append(stats.describe(f"**{bb}**, Balanced Softmax vs cross-entropy", bs, ce,
                                        "test_acc", _images))
            lines.append(stats.describe(f"**{bb}**, Balanced Softmax vs cross-entropy", bs, ce,
                                        "test_bal_acc", _images)
                         + f"; few-shot test accuracy {ce['test_few']:.4f} → "
                         f"{bs['test_few']:.4f}, many-shot {ce['test_many']:.4f} → "
                         f"{bs['test_many']:.4f}")
        sub = t.xs(bb, level="backbone")["val_bal_acc"].astype(float)
        if len(sub) < 2:
            continue
        hi, lo = rows[(bb, sub.idxmax())], rows[(bb, sub.idxmin())]
        lines.append(stats.describe(
            f"**{bb}**: the best method by val balanced accuracy, **{sub.idxmax()}**, vs the "
            f"worst, {sub.idxmin()}", hi, lo, "test_bal_acc", _images))
    return lines


def comparable_to_hw2(cfg: dict, *, long_tail: str, n_max, lt_counts) -> bool:
    """Whether a run is the report's protocol: its long tail (the `hw2` preset with full head
    classes) and its backbone's protocol epochs."""
    proto = c_backbones(lr_pretrained=0.0)[cfg["group"]]
    return (long_tail == "hw2" and n_max is None and lt_counts is None
            and proto.get("track") == "hw2" and cfg["epochs"] == proto["epochs"])


def protocol_check(*, long_tail: str, n_max, lt_counts):
    """`comparable_to_hw2` for this notebook's long tail: a function of a run's config."""
    return lambda cfg: comparable_to_hw2(cfg, long_tail=long_tail, n_max=n_max,
                                         lt_counts=lt_counts)


def track_table(rows: dict, results: dict, *, comparable) -> pd.DataFrame:
    """The headline comparison: HW2 report (its split) | this study, HW2 protocol | this study,
    best recipe, for each backbone kind × CE / Balanced Softmax (val accuracy, the report's
    metric — on this study's split the selection metric; the report's numbers are on its own split
    and marked context only where this run is not its protocol); the last row the test balanced
    accuracy at the val-chosen checkpoint."""
    def cell(key, m):
        r = rows.get(key)
        return "not run" if r is None else f"{r[m]:.4f}"

    best = next((c["group"] for c in (r["config"] for r in results.values())
                 if c.get("track") == "best"), "best")

    out = []
    for kind, bb in (("from scratch", "resnext18"), ("ImageNet-pretrained", "resnet18_pretrained")):
        for loss, name in (("ce", "cross-entropy"), ("balanced_softmax", "Balanced Softmax")):
            ref = reference_value(f"C/{bb}_{loss}", text=True)
            res = results.get((bb, loss))
            if res is not None and not comparable(res["config"]):
                ref += " (another protocol: context only)"
            out.append({"": f"{kind}, {name}: val acc", REF_LABEL: ref,
                        "this study, HW2 protocol": cell((bb, loss), "val_acc"),
                        f"this study, best recipe ({best})": cell((best, loss), "val_acc")
                        if bb == "resnext18" else "—"})
    out.append({"": "from scratch, Balanced Softmax: test balanced acc",
                REF_LABEL: "not reported",
                "this study, HW2 protocol": cell(("resnext18", "balanced_softmax"),
                                                 "test_bal_acc"),
                f"this study, best recipe ({best})": cell((best, "balanced_softmax"),
                                                          "test_bal_acc")})
    return pd.DataFrame(out).set_index("")


def headline_rows(rows: dict, t: pd.DataFrame, results: dict, *, comparable) -> list[dict]:
    """The index's rows; the report's number beside a run only when the run is its protocol."""
    heads = []
    for (bb, m), r in rows.items():
        if m not in ("ce", "balanced_softmax"):
            continue
        res = results[(bb, m)]
        same = comparable(res["config"])
        ref = reference_value(f"C/{bb}_{m}", text=True)
        ref = None if ref == "—" else ref
        note = (f"val bal acc {r['val_bal_acc']:.4f}; test acc {r['test_acc']:.4f}, test bal acc "
                f"{r['test_bal_acc']:.4f}, few-shot test {r['test_few']:.4f}")
        if ref is not None and same:
            note += "; the HW2 report's number is on its own split (context)"
        if ref is not None and not same:
            note += f"; HW2's {ref} is another protocol (long tail or epochs): not comparable"
        heads.append(headline(f"C {bb} {m}: val acc", r["val_acc"], ref if same else None, note,
                              run_id=res["run_id"]))
    best = t["val_bal_acc"].astype(float).idxmax()
    heads.append(headline(f"C best by val balanced acc: {best[0]} {best[1]}: test balanced acc",
                          t.loc[best, "test_bal_acc"], None,
                          f"val balanced acc {t.loc[best, 'val_bal_acc']:.4f}",
                          run_id=(results.get(best) or results.get((best[0], "ce"))
                                  or {}).get("run_id")))
    return heads
