"""Task C's logic: the long-tailed training set, the backbones × losses to train, the post-hoc
and classifier re-training remedies, and the table, figures and findings C-longtail shows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hw2lib import metrics
from hw2lib.experiment import experiment_config, load_trained, make_loader, run_experiment
from hw2lib.reference import REFERENCE


def backbones(*, lr_scratch: float, lr_pretrained: float, pretrained_resize=None) -> dict:
    """The two backbones of the study and their recipes."""
    return {
        "resnext18": dict(model="resnext18", optimizer="adam", lr=lr_scratch, weight_decay=0.0,
                          schedule="multistep", augment="basic"),
        "resnet18_pretrained": dict(model="resnet18", pretrained=True, resize=pretrained_resize,
                                    optimizer="sgd", lr=lr_pretrained, weight_decay=1e-4,
                                    schedule="cosine", augment="basic"),
    }


def long_tail(ds, idx: dict, *, rho, n_max, lt_seed, lt_counts) -> tuple[dict, list[int]]:
    """`idx` with its train rows made long-tailed; the per-class training counts."""
    from hw2lib import data as D

    train = idx["train"]
    pos, counts = D.long_tail_indices(ds.y[train].numpy(), ds.num_classes, rho=rho, n_max=n_max,
                                      seed=lt_seed, counts=lt_counts)
    return {**idx, "train": train[pos]}, counts


def run_all(ds, idx: dict, counts, run_root, *, catalogue: dict, backbone_names, losses,
            epochs: int, batch_size: int, seed: int, device, weights=None,
            allow_random_init=False, max_steps=None, force=False) -> dict:
    """Train (or reuse) every backbone × loss; {(backbone, loss): result with `history` and
    `predictions`}."""
    from hw2lib.engine import read_history
    from hw2lib.experiment import load_predictions

    unknown = set(backbone_names) - set(catalogue)
    if unknown:
        raise ValueError(f"unknown backbone(s) {sorted(unknown)}; choose from {list(catalogue)}")
    results = {}
    for bb in backbone_names:
        for loss in losses:
            cfg = experiment_config(dict(name=f"{bb}_{loss}", loss=loss, **catalogue[bb]),
                                    epochs=epochs, batch_size=batch_size, seed=seed)
            print(f"— {cfg['name']}", flush=True)
            res = run_experiment(cfg, ds, run_root, train_idx=idx["train"], val_idx=idx["val"],
                                 test_idx=idx["test"], device=device, class_counts=counts,
                                 weights=weights, allow_random_init=allow_random_init,
                                 max_steps=max_steps, force=force)
            print(f"  run {res['run_id']}: val {res['val_acc']:.4f}, bal {res['val_bal_acc']:.4f}"
                  f"{' (reused)' if res['reused'] else ''}", flush=True)
            results[(bb, loss)] = {**res, "history": read_history(res["run_dir"]),
                                   "predictions": load_predictions(res["run_dir"])}
    return results


def scores(logits_val, y_val, logits_test, y_test, counts, num_classes: int) -> dict:
    """Accuracy and balanced accuracy on val and test; many/medium/few-shot and per-class test
    accuracy."""
    out = {}
    for split, lg, y in (("val", logits_val, y_val), ("test", logits_test, y_test)):
        pred = np.asarray(lg).argmax(1)
        out[f"{split}_acc"] = metrics.accuracy(y, pred)
        out[f"{split}_bal_acc"] = metrics.balanced_accuracy(y, pred)
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
    import torch
    from torch import nn

    from hw2lib.features import extract_features
    from hw2lib.nn_utils import last_linear

    loader = make_loader(ds, train_idx, cfg, device, train=False, batch_size=256)
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


def method_scores(results: dict, ds, idx: dict, counts, *, posthoc_tau: float, crt_epochs: int,
                  seed: int, device) -> dict:
    """Scores of every trained (backbone, loss), plus, for each backbone's CE model, post-hoc
    logit adjustment and (when `crt_epochs`) cRT. Keys: (backbone, method)."""
    import torch

    from hw2lib.engine import predict
    from hw2lib.losses import posthoc_logit_adjust

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
        adj = {s: posthoc_logit_adjust(torch.from_numpy(p[f"{s}_logits"]), counts,
                                       tau=posthoc_tau).numpy() for s in ("val", "test")}
        rows[(bb, f"posthoc (τ={posthoc_tau:g})")] = scores(
            adj["val"], p["val_targets"], adj["test"], p["test_targets"], counts, k)
        if crt_epochs:
            cfg = res["config"]
            model, _ = load_trained(f"{res['run_dir']}/best.pt", device)
            retrain_classifier(model, ds, idx["train"], cfg, device, epochs=crt_epochs, seed=seed)
            lg = {s: predict(model, make_loader(ds, idx[s], cfg, device, train=False), device)
                  for s in ("val", "test")}
            rows[(bb, "cRT")] = scores(lg["val"][0], lg["val"][1].numpy(), lg["test"][0],
                                       lg["test"][1].numpy(), counts, k)
    return rows


def table(rows: dict) -> pd.DataFrame:
    """One row per (backbone, method), each backbone's methods together."""
    order = [k for bb in dict.fromkeys(b for b, _ in rows) for k in rows if k[0] == bb]
    t = pd.DataFrame({k: {m: v for m, v in rows[k].items() if m != "test_per_class"}
                      for k in order}).T
    t.index.names = ["backbone", "method"]
    return t


def confusions(results: dict, split: str = "test") -> dict[str, dict[str, np.ndarray]]:
    """Per backbone, the confusion matrices of cross-entropy and Balanced Softmax on `split`."""
    out: dict[str, dict] = {}
    for (bb, loss), res in results.items():
        if loss in ("ce", "balanced_softmax"):
            p = res["predictions"]
            k = p[f"{split}_logits"].shape[1]
            out.setdefault(bb, {})[loss] = metrics.confusion_matrix(
                p[f"{split}_targets"], p[f"{split}_logits"].argmax(1), k)
    return out


def findings(rows: dict, t: pd.DataFrame) -> list[str]:
    """CE → Balanced Softmax per backbone, and each backbone's best and worst method."""
    lines = []
    for bb in dict.fromkeys(b for b, _ in rows):
        if (bb, "ce") in rows and (bb, "balanced_softmax") in rows:
            ce, bs = rows[(bb, "ce")], rows[(bb, "balanced_softmax")]
            lines.append(
                f"**{bb}**: cross-entropy → Balanced Softmax: val accuracy {ce['val_acc']:.4f} → "
                f"{bs['val_acc']:.4f}, balanced accuracy {ce['val_bal_acc']:.4f} → "
                f"{bs['val_bal_acc']:.4f}; few-shot test accuracy {ce['test_few']:.4f} → "
                f"{bs['test_few']:.4f}, many-shot {ce['test_many']:.4f} → {bs['test_many']:.4f}.")
        sub = t.xs(bb, level="backbone")["val_bal_acc"].astype(float)
        lines.append(f"**{bb}**: the best method by val balanced accuracy is **{sub.idxmax()}** "
                     f"({sub.max():.4f}); the worst is {sub.idxmin()} ({sub.min():.4f}).")
    return lines


def headline_rows(rows: dict, t: pd.DataFrame, results: dict) -> list[dict]:
    from hw2lib.notebook import headline

    heads = []
    for (bb, m), r in rows.items():
        if m not in ("ce", "balanced_softmax"):
            continue
        heads.append(headline(f"C {bb} {m}: val acc", r["val_acc"], REFERENCE.get(f"C/{bb}_{m}"),
                              f"bal acc {r['val_bal_acc']:.4f}, few-shot test {r['test_few']:.4f}",
                              run_id=results[(bb, m)]["run_id"]))
    best = t["val_bal_acc"].astype(float).idxmax()
    heads.append(headline(f"C best by val balanced acc: {best[0]} {best[1]}",
                          t.loc[best, "val_bal_acc"], None, "balanced accuracy",
                          run_id=(results.get((best[0], "ce")) or {}).get("run_id")))
    return heads
