"""Task C's logic: the long-tailed training set, the backbones × losses to train, the post-hoc
and classifier re-training remedies, and the table, figures and findings C-longtail shows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from hw2lib.data import long_tail_indices
from hw2lib.nets import metrics
from hw2lib.nets.losses import posthoc_logit_adjust
from hw2lib.study import notebook, stats
from hw2lib.study.notebook import headline
from hw2lib.study.plots import plot_confusions, plot_history, plot_per_class_vs_count
from hw2lib.study.reference import REF_LABEL, reference_value
from hw2lib.study.remedies import posthoc_tau_on_val, retrain_classifier
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
    """The resolved recipe of every backbone × loss × seed C-longtail trains with parameters `p`
    (the notebook's: its globals in the notebook, the checked parameters in `hw2 plan`), in
    order: `backbones`, `losses`, `seeds`; `epochs` replacing the protocol's epochs of the
    HW2-protocol backbones and `best_epochs` those of the best recipe, `best_stem`, `batch_size`.
    Every C run keeps the checkpoint of the best validation *balanced* accuracy, the metric C
    ranks its methods by."""
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
            for s in p["seeds"]:
                out.append(resolve(dict(name=f"{bb}_{loss}", loss=loss, group=bb,
                                        select="bal_acc", **spec),
                                   batch_size=p["batch_size"], seed=s))
    return out


def run_all(ds, idx: dict, counts, run_root, cfgs: list[dict], *, device, weights=None,
            allow_random_init=False, max_steps=None, force=False, executor: str = "local",
            gpus_per_run: float = 1.0, ray_address: str | None = None,
            require_gpu: bool = False) -> tuple[dict, list]:
    """Train (or reuse) every configuration through the executor (see `hw2lib.train.executor`);
    ({(backbone, loss, seed): result with `history` and `predictions`}, the failed runs)."""
    jobs = [dict(cfg=cfg, ds=ds, run_root=run_root, train_idx=idx["train"], val_idx=idx["val"],
                 test_idx=idx["test"], device=device, class_counts=counts, weights=weights,
                 allow_random_init=allow_random_init, max_steps=max_steps, force=force)
            for cfg in cfgs]
    done, failed = split_failed(run_experiments(jobs, executor=executor,
                                                gpus_per_run=gpus_per_run,
                                                ray_address=ray_address,
                                                require_gpu=require_gpu))
    results = {(r["config"]["group"], r["config"]["loss"], r["config"]["seed"]): {
        **r, "predictions": load_predictions(r["run_folder"])} for r in done}
    return results, failed


# Per-image arrays of a score row (for paired tests), not table columns.
ARRAYS = ("test_per_class", "val_pred", "val_targets", "test_pred", "test_targets")


def val_halves(y_val, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The validation images split in two stratified halves (positions): the first chooses
    post-hoc's τ, the second ranks the methods — so that no method is ranked on the images that
    tuned it (τ's grid holds τ = 0, plain CE: ranked on the images that chose τ, post hoc could
    never lose to CE)."""
    y = np.asarray(y_val)
    rng = np.random.default_rng(seed)
    choose, rank = [], []
    for k in np.unique(y):
        pos = rng.permutation(np.flatnonzero(y == k))
        choose.append(pos[: len(pos) // 2])
        rank.append(pos[len(pos) // 2:])
    return np.sort(np.concatenate(choose)), np.sort(np.concatenate(rank))


def scores(logits_val, y_val, logits_test, y_test, counts, num_classes: int,
           rank_rows=None) -> dict:
    """Accuracy and balanced accuracy on val and test (`val_rank_bal_acc`: on the validation
    half that ranks the methods, `rank_rows`); many/medium/few-shot and per-class test accuracy;
    the predictions and targets (`<split>_pred`, `<split>_targets`)."""
    out = {}
    for split, lg, y in (("val", logits_val, y_val), ("test", logits_test, y_test)):
        pred = np.asarray(lg).argmax(1)
        y = np.asarray(y)
        out[f"{split}_pred"], out[f"{split}_targets"] = pred, y
        out[f"{split}_acc"] = metrics.accuracy(y, pred)
        out[f"{split}_bal_acc"] = metrics.balanced_accuracy(y, pred)
        out[f"{split}_n"] = len(y)
        if split == "val" and rank_rows is not None:
            out["val_rank_bal_acc"] = metrics.balanced_accuracy(y[rank_rows], pred[rank_rows])
        if split == "test":
            for g, v in metrics.group_accuracy(y, pred, counts).items():
                out[f"test_{g}"] = v
            out["test_per_class"] = metrics.per_class_accuracy(y, pred, num_classes)
    return out


POSTHOC, CRT = "posthoc", "cRT"


def method_scores(results: dict, ds, idx: dict, counts, *, posthoc_tau: float | None,
                  crt_epochs: int, device, split_seed: int = 0) -> dict:
    """Scores of every trained (backbone, loss, seed), plus, for each CE run, post-hoc logit
    adjustment (τ = `posthoc_tau`, or None: chosen from `POSTHOC_TAUS` on the validation half
    that does not rank the methods, `val_halves`) and (when `crt_epochs`) cRT seeded by the run's
    seed, scored like its row neighbours (8-view TTA when the recipe has it). Keys: (backbone,
    method, seed); a post-hoc row's `tau` is its τ."""
    k = ds.num_classes
    rows = {}
    halves = None
    for key, res in results.items():
        p = res["predictions"]
        if halves is None:
            halves = val_halves(p["val_targets"], split_seed)
        rows[key] = scores(p["val_logits"], p["val_targets"], p["test_logits"], p["test_targets"],
                           counts, k, halves[1])
    for (bb, loss, seed), res in results.items():
        if loss != "ce":
            continue
        p = res["predictions"]
        tau = posthoc_tau
        if tau is None:
            tau = posthoc_tau_on_val(p["val_logits"][halves[0]], p["val_targets"][halves[0]],
                                     counts)
        adj = {s: posthoc_logit_adjust(torch.from_numpy(p[f"{s}_logits"]), counts,
                                       tau=tau).numpy() for s in ("val", "test")}
        rows[(bb, POSTHOC, seed)] = {**scores(adj["val"], p["val_targets"], adj["test"],
                                              p["test_targets"], counts, k, halves[1]),
                                     "tau": tau}
        if crt_epochs:
            cfg = res["config"]
            model, _ = load_trained(f"{res['run_folder']}/best.pt", device)
            retrain_classifier(model, ds, idx["train"], cfg, device, epochs=crt_epochs, seed=seed)
            lg = {s: (predict_tta if cfg.get("tta") else predict)(
                      model, make_loader(ds, idx[s], cfg, device, train=False), device)
                  for s in ("val", "test")}
            rows[(bb, CRT, seed)] = scores(lg["val"][0], lg["val"][-1].numpy(), lg["test"][0],
                                           lg["test"][-1].numpy(), counts, k, halves[1])
    return rows


def _methods(rows: dict) -> dict[tuple[str, str], dict[int, dict]]:
    """{(backbone, method): {seed: score row}}, each backbone's methods together, CE first."""
    out: dict = {}
    for (bb, m, s) in sorted(rows, key=lambda k: (list(dict.fromkeys(b for b, _, _ in rows))
                                                  .index(k[0]), k[1] != "ce", k[2])):
        out.setdefault((bb, m), {})[s] = rows[(bb, m, s)]
    return out


SHOWN = ("val_bal_acc", "val_rank_bal_acc", "test_acc", "test_bal_acc", "test_many", "test_medium",
         "test_few")


def table(rows: dict, results: dict | None = None, csv=None) -> pd.DataFrame:
    """One row per (backbone, method), each backbone's methods together: the seeds' mean of each
    metric (`SHOWN`: val balanced accuracy — the checkpoints' selection metric —, the ranking
    half's, test accuracy, balanced and by shot group), the test balanced accuracy's SD over
    seeds, post-hoc's τ, and the run ids (also written to `csv`)."""
    out = {}
    for (bb, m), by_seed in _methods(rows).items():
        rec = {"seeds": len(by_seed)}
        for col in SHOWN:
            rec[col] = float(np.mean([r[col] for r in by_seed.values()]))
        vals = [r["test_bal_acc"] for r in by_seed.values()]
        rec["test_bal_acc_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
        taus = [r["tau"] for r in by_seed.values() if "tau" in r]
        rec["τ"] = " ".join(f"{t:g}" for t in taus) if taus else ""
        if results is not None:
            run = "ce" if m in (POSTHOC, CRT) else m
            rec["run ids"] = " ".join(str(results[(bb, run, s)]["run_id"]) for s in by_seed
                                      if (bb, run, s) in results)
        out[(bb, m)] = rec
    t = pd.DataFrame(out).T
    t.index.names = ["backbone", "method"]
    if csv is not None:
        t.to_csv(csv)
    return t


def per_class_by_backbone(rows: dict) -> dict[str, dict[str, list]]:
    """Per backbone, each method's per-class test accuracy (mean over seeds), for the
    accuracy-vs-count figure."""
    out: dict[str, dict] = {}
    for (bb, m), by_seed in _methods(rows).items():
        out.setdefault(bb, {})[m] = np.mean([r["test_per_class"] for r in by_seed.values()],
                                            axis=0)
    return out


def confusions(results: dict, split: str = "test") -> dict[str, dict[str, np.ndarray]]:
    """Per backbone, the confusion matrices of cross-entropy and Balanced Softmax on `split` (the
    first seed's runs), each titled with its accuracy on that split; on val also with the plain
    cross-entropy of the saved (best-checkpoint) logits — the same loss for every method, named as
    such (each method's own training loss would not be comparable: Balanced Softmax's is CE on
    shifted logits)."""
    out: dict[str, dict] = {}
    first = min(s for _, _, s in results)
    for (bb, loss, seed), res in results.items():
        if loss in ("ce", "balanced_softmax") and seed == first:
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
    first = min(s for _, _, s in results)
    return [plot_confusions(cms, classes, title=f"{bb} (seed {first})")
            for bb, cms in confusions(results, split).items()]


def per_class_figures(rows: dict, counts, classes) -> list:
    """Per backbone, each method's per-class test accuracy against the class's training count."""
    return [plot_per_class_vs_count(per_class, counts, classes, title=bb)
            for bb, per_class in per_class_by_backbone(rows).items()]


def history_figures(results: dict) -> list:
    """Per backbone, the training curves of every loss (the first seed)."""
    first = min(s for _, _, s in results)
    return [plot_history({m: r["history"] for (b, m, s), r in results.items()
                          if b == bb and s == first}, title=f"{bb} (seed {first})")
            for bb in dict.fromkeys(b for b, _, _ in results)]


def styled(t):
    """`table` as the page shows it: four decimals, the two balanced accuracies shaded."""
    return t.style.format("{:.4f}", subset=list(SHOWN) + ["test_bal_acc_sd"], na_rep="—") \
        .background_gradient(subset=["val_rank_bal_acc", "test_bal_acc"], cmap="Greens")


def write_results(run_dir, t: pd.DataFrame, results: dict, families, *, counts, long_tail: str,
                  comparable, warnings_, device) -> None:
    """C-longtail's results.json: the index's rows, every finding, the counts and the table."""
    notebook.write_results(run_dir, headline_rows=headline_rows(t, results, comparable=comparable),
                           warnings_=warnings_, device=device, findings=families,
                           metrics={"counts": counts, "long_tail": long_tail,
                                    "table": t.reset_index().to_dict("records")})


def _summary(bb: str, m: str, by_seed: dict, key: str, results: dict | None) -> dict:
    """A (backbone, method)'s seeds as a `stats.compare` row for metric `key`, with its per-seed
    test predictions for the paired tests."""
    seeds = sorted(by_seed)
    run = "ce" if m in (POSTHOC, CRT) else m
    ids = " ".join(str((results or {}).get((bb, run, s), {}).get("run_id", "")) for s in seeds)
    return {"name": f"{bb} {m}", "seed_ids": seeds, key: float(np.mean(
        [by_seed[s][key] for s in seeds])), f"{key}_values": [by_seed[s][key] for s in seeds],
        "run_ids": f"{ids} {m}", "_preds": {s: (by_seed[s]["test_pred"],
                                               by_seed[s]["test_targets"]) for s in seeds}}


def _images(groups: list[str] | None = None, group: str | None = None):
    """`stats.ImagesFn` of C's rows: each row holds its own test predictions; for a shot group's
    accuracy (`group`) only the images of that group's classes."""
    def images(row: dict, seed):
        pred, y = row["_preds"][seed]
        keep = np.ones(len(y), bool) if group is None else np.isin(
            y, [i for i, g in enumerate(groups) if g == group])
        return (pred == y)[keep], y[keep]

    return images


def remedies_family(bb: str) -> str:
    return f"C remedies vs cross-entropy on {bb} (test balanced accuracy)"


CHOSEN = "C: the method chosen on validation vs cross-entropy (test balanced accuracy)"
SHOTS = "C: Balanced Softmax vs cross-entropy by shot group (test accuracy)"


def findings(rows: dict, counts, results: dict | None = None) -> tuple[list, list[str]]:
    """What C's runs say, as families of comparisons (Holm-adjusted p decides each word):
    per backbone, every remedy against cross-entropy on test balanced accuracy (the metric C
    selects checkpoints and ranks methods by); per backbone, the method that the ranking half of
    validation chooses against cross-entropy; per backbone, Balanced Softmax against
    cross-entropy on the few-shot and many-shot classes. Returns (families, notes)."""
    methods = _methods(rows)
    backbones = list(dict.fromkeys(bb for bb, _ in methods))
    groups = metrics.shot_groups(counts)
    fams, notes = [], []
    chosen = stats.Family(CHOSEN, "the choice by mean balanced accuracy on the validation half "
                                  "that tuned nothing")
    shots = stats.Family(SHOTS, "each group's classes' mean accuracy")
    for bb in backbones:
        if (bb, "ce") not in methods:
            continue
        ce = methods[(bb, "ce")]
        fam = stats.Family(remedies_family(bb))
        for (b2, m), by_seed in methods.items():
            if b2 == bb and m != "ce":
                fam.add(f"{bb}: {m} vs cross-entropy",
                        _summary(bb, m, by_seed, "test_bal_acc", results),
                        _summary(bb, "ce", ce, "test_bal_acc", results), "test_bal_acc",
                        _images())
        if fam.items:
            fams.append(fam)
        ranked = {m: np.mean([r["val_rank_bal_acc"] for r in s.values()])
                  for (b2, m), s in methods.items() if b2 == bb}
        pick = max(ranked, key=lambda m: (ranked[m], m == "ce"))
        if pick == "ce":
            notes.append(f"{bb}: validation (its ranking half) chooses cross-entropy itself "
                         f"({ranked['ce']:.4f} balanced accuracy): no remedy to compare with it.")
        else:
            # the label names the comparison, not its outcome, so that `hw2 compare` lines up
            # two reports whose validation chose differently (it shows the arms beside it)
            chosen.add(f"{bb}: the method chosen on validation vs cross-entropy",
                       _summary(bb, pick, methods[(bb, pick)], "test_bal_acc", results),
                       _summary(bb, "ce", ce, "test_bal_acc", results), "test_bal_acc",
                       _images(), extra=f" [chosen: {pick}, {ranked[pick]:.4f} vs CE's "
                                        f"{ranked['ce']:.4f} on validation's ranking half]")
        if (bb, "balanced_softmax") in methods:
            bs = methods[(bb, "balanced_softmax")]
            for g in ("few", "many"):
                if g in groups:
                    shots.add(f"{bb}, {g}-shot classes: Balanced Softmax vs cross-entropy",
                              _summary(bb, "balanced_softmax", bs, f"test_{g}", results),
                              _summary(bb, "ce", ce, f"test_{g}", results), f"test_{g}",
                              _images(groups, g), balanced=True)  # the group's classes' mean
    return fams + [f for f in (chosen, shots) if f.items], notes


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


def _config(results: dict, bb: str, loss: str) -> dict | None:
    return next((r["config"] for (b, m, _), r in results.items() if b == bb and m == loss), None)


def track_table(t: pd.DataFrame, results: dict, *, comparable) -> pd.DataFrame:
    """The headline comparison: HW2 report (its split) | this study, HW2 protocol | this study,
    best recipe, for each backbone kind × CE / Balanced Softmax: test accuracy at the checkpoint
    validation chose (the seeds' mean; the report's numbers are its val accuracy on its own split,
    marked context only where this run is not its protocol); the last row the test balanced
    accuracy."""
    def cell(key, m):
        return "not run" if key not in t.index else f"{t.loc[key, m]:.4f}"

    best = next((c["group"] for c in (r["config"] for r in results.values())
                 if c.get("track") == "best"), "best")
    out = []
    for kind, bb in (("from scratch", "resnext18"), ("ImageNet-pretrained", "resnet18_pretrained")):
        for loss, name in (("ce", "cross-entropy"), ("balanced_softmax", "Balanced Softmax")):
            ref = reference_value(f"C/{bb}_{loss}", text=True)
            cfg = _config(results, bb, loss)
            if cfg is not None and not comparable(cfg):
                ref += " (another protocol: context only)"
            out.append({"": f"{kind}, {name}: test acc", REF_LABEL: ref,
                        "this study, HW2 protocol": cell((bb, loss), "test_acc"),
                        f"this study, best recipe ({best})": cell((best, loss), "test_acc")
                        if bb == "resnext18" else "—"})
    out.append({"": "from scratch, Balanced Softmax: test balanced acc",
                REF_LABEL: "not reported",
                "this study, HW2 protocol": cell(("resnext18", "balanced_softmax"),
                                                 "test_bal_acc"),
                f"this study, best recipe ({best})": cell((best, "balanced_softmax"),
                                                          "test_bal_acc")})
    return pd.DataFrame(out).set_index("")


def headline_rows(t: pd.DataFrame, results: dict, *, comparable) -> list[dict]:
    """The index's rows, "this run" the test accuracy (the seeds' mean); the report's number (its
    val accuracy, its split) beside a run only when the run is its protocol."""
    heads = []
    for (bb, m), r in t.iterrows():
        if m not in ("ce", "balanced_softmax"):
            continue
        cfg = _config(results, bb, m)
        same = comparable(cfg)
        ref = reference_value(f"C/{bb}_{m}", text=True)
        ref = None if ref == "—" else ref
        note = (f"n={r['seeds']}; test balanced acc {r['test_bal_acc']:.4f}, few-shot test "
                f"{r['test_few']:.4f}, many-shot test {r['test_many']:.4f}; val balanced acc "
                f"{r['val_bal_acc']:.4f} (the selection metric)")
        if ref is not None and same:
            note += "; the HW2 report's number is its val accuracy on its own split (context)"
        if ref is not None and not same:
            note += f"; HW2's {ref} is another protocol (long tail or epochs): not comparable"
        heads.append(headline(f"C {bb} {m}: test acc", r["test_acc"], ref if same else None,
                              note, run_id=r.get("run ids")))
    return heads
