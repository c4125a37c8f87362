"""Task A's logic: fine-tuning the ImageNet ResNet-50 (A-train) — its recipe, t-SNE of its features
and what its confusion matrix and embedding show — and the feature visualization of its last 1×1
conv (A-vis): which model, which tiles, which channels, and what the optimizations reached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hw2lib.core import io
from hw2lib.data import subsample_per_class
from hw2lib.nets import featvis
from hw2lib.nets.features import extract_features, knn_predictions, tsne_embed
from hw2lib.study.notebook import headline
from hw2lib.study.reference import REF_LABEL
from hw2lib.train.experiment import load_trained, make_loader, normalization
from hw2lib.train.recipes import Recipe, resolve

# --------------------------------------------------------------------------- A-train

# A-train's parameters that are recipe settings, under the same names.
FINETUNE_SETTINGS = ("pretrained", "resize", "optimizer", "lr", "momentum", "weight_decay",
                     "schedule", "warmup_epochs", "augment", "batch_size", "epochs", "seed")


def config(p) -> Recipe:
    """A-train's one training with its parameters `p` (the notebook's: its globals in the
    notebook, the checked parameters in `hw2 plan`): the whole network trained, the head replaced
    for the classes."""
    return resolve(dict(name=p["model_name"], model=p["model_name"], track="hw2",
                        **{k: p[k] for k in FINETUNE_SETTINGS}))



# A's protocol as this study runs it (the report gives no recipe: see `reconstructions`): the
# report's 0.963 sits beside a run only when it is an ImageNet-pretrained ResNet-50 fine-tuned at
# this budget on the whole EuroSAT train split.
A_PROTOCOL_EPOCHS = 15
EUROSAT_TRAIN_IMAGES = 16_200


def a_reference(res: dict, reference: float | None) -> tuple[float | None, str]:
    """(the report's number, or None when this run is not its protocol; why not)."""
    cfg = res["config"]
    n_train = (res.get("identity") or {}).get("data", {}).get("n_train")
    why = [w for w, bad in (
        (f"a {cfg['model']}, not a ResNet-50", cfg["model"] != "resnet50"),
        ("not ImageNet-pretrained", not cfg.get("pretrained")),
        ("trained from random init (no ImageNet weights)", bool(res.get("warning"))),
        (f"{cfg['epochs']} epochs, not the protocol's {A_PROTOCOL_EPOCHS}",
         cfg["epochs"] < A_PROTOCOL_EPOCHS),
        (f"{n_train:,} training images, not the whole split's {EUROSAT_TRAIN_IMAGES:,}"
         if n_train else "", n_train is not None and n_train != EUROSAT_TRAIN_IMAGES),
    ) if bad]
    if reference is None or why:
        return None, ("" if reference is None else
                      f"The HW2 report's {reference:.4f} (its split) is not shown beside this "
                      f"run: {'; '.join(why)}.")
    return reference, "The HW2 report's number is its val accuracy on its own split."


def accuracy_table(res: dict, reference: float | None):
    """Val/test accuracy (and balanced) of the run beside the HW2 report's val accuracy — only
    when the run is the report's protocol (`a_reference`; the caption says why not)."""
    ref, why = a_reference(res, reference)
    keys = ["val_acc", "val_bal_acc", "test_acc", "test_bal_acc"]
    return pd.DataFrame(
        {f"this run ({res['run_id']})": [res[k] for k in keys],
         REF_LABEL: [ref, None, None, None]},
        index=["val accuracy", "val balanced accuracy", "test accuracy", "test balanced accuracy"],
    ).style.format("{:.4f}", na_rep="—").set_caption(why)


def tsne(res: dict, ds, rows, *, points: int, perplexity: float, seed: int, device) -> dict:
    """t-SNE of the penultimate features of a stratified subset (≤ `points`) of `rows`:
    {"embedding", "labels", "knn" (kNN accuracy of the 2-D embedding), "knn_per_class", "dim"}."""

    model, cfg = load_trained(Path(res["run_folder"]) / "best.pt", device)
    rows = np.asarray(rows)
    rows = rows[subsample_per_class(ds.y[rows].numpy(), max(1, points // ds.num_classes),
                                    seed=seed)]
    feats, labels = extract_features(model, make_loader(ds, rows, cfg, device, train=False),
                                     device=device)
    emb = tsne_embed(feats, seed=seed, perplexity=min(perplexity, (len(rows) - 1) / 3))
    pred = knn_predictions(emb, labels, k=min(10, len(rows) - 1))  # one neighbour search
    return {"embedding": emb, "labels": labels, "knn": float(np.mean(pred == labels)),
            "knn_per_class": _per_class_hits(pred, labels, ds.num_classes),
            "dim": feats.shape[1], "n": len(rows)}


def headline_rows(res: dict, emb: dict, model_name: str, reference: float | None) -> list[dict]:
    """The index's rows for A-train, each with the run id it came from."""
    init = "random init" if res["warning"] else "ImageNet init"
    rid = res["run_id"]
    ref, why = a_reference(res, reference)
    return [headline(f"{model_name} fine-tuned: val accuracy", res["val_acc"], ref,
                     f"{init}. {why}" if why else init, rid),
            headline(f"{model_name} fine-tuned: test accuracy", res["test_acc"], run_id=rid),
            headline("t-SNE kNN accuracy (2-D)", emb["knn"], run_id=rid)]


def summary_metrics(res: dict, emb: dict) -> dict:
    keys = ("val_acc", "val_bal_acc", "test_acc", "test_bal_acc", "params", "wall_seconds",
            "best_epoch")
    return {k: res[k] for k in keys} | {"tsne_knn_acc": emb["knn"]}


def _per_class_hits(pred, labels, num_classes: int) -> list[float]:
    return [float((pred[labels == c] == c).mean()) if (labels == c).any() else float("nan")
            for c in range(num_classes)]


def confused_pairs(cm, classes, k: int = 3) -> list[tuple[str, str, int]]:
    """The `k` largest off-diagonal counts: (true class, predicted class, count), count > 0."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    pairs = [(classes[i], classes[j], int(off[i, j]))
             for i, j in zip(*np.unravel_index(order, off.shape), strict=True)]
    return [p for p in pairs if p[2] > 0]


def train_findings(history: list[dict], cm, classes, emb: dict, *, random_init: bool) -> list[str]:
    """What this run shows, computed from it: how fast it converged, its generalization gap,
    which classes it confuses, and which form islands in the t-SNE."""
    first, last = history[0], history[-1]
    best = max(history, key=lambda h: h["val_acc"])
    init = "random init (no ImageNet weights)" if random_init else "ImageNet weights"
    lines = [f"From {init}: val accuracy {first['val_acc']:.4f} after epoch 1, "
             f"{best['val_acc']:.4f} at its best (epoch {best['epoch']} of {len(history)})."]
    if last["val_loss"] is not None:
        lines.append(f"Last epoch: train loss {last['train_loss']:.3f}, val loss "
                     f"{last['val_loss']:.3f} (train accuracy {last['train_acc']:.4f} vs val "
                     f"{last['val_acc']:.4f}: a gap of {100 * (last['train_acc'] - last['val_acc']):+.1f} points).")
    pairs = confused_pairs(cm, classes)
    if pairs:
        total = int(np.asarray(cm).sum())
        lines.append("Most frequent confusions on the test split: " + "; ".join(
            f"{a} → {b} ({n} of {total})" for a, b, n in pairs) + ".")
    per = np.asarray(emb["knn_per_class"], dtype=float)
    ok = ~np.isnan(per)
    if ok.sum() >= 2:
        order = [i for i in np.argsort(per) if ok[i]]
        lines.append(
            f"t-SNE: kNN accuracy of the 2-D embedding {emb['knn']:.4f}; the tightest islands are "
            + ", ".join(f"{classes[i]} ({per[i]:.2f})" for i in order[::-1][:3])
            + "; the most mixed classes are "
            + ", ".join(f"{classes[i]} ({per[i]:.2f})" for i in order[:3]) + ".")
    return lines


# --------------------------------------------------------------------------- A-vis


def load_a_train(train_results, checkpoint=None, device="cpu") -> tuple:
    """A-train's model for visualization (frozen, eval mode): from the checkpoint named in its
    results.json (or `checkpoint`, when given). Returns (model, config, the input's identity
    {"run_id", "checkpoint", "sha256"}, a warning when it was not ImageNet-pretrained or None)."""
    warning = None
    run_id = None
    if checkpoint is None:
        path = Path(train_results)
        if not path.exists():
            raise FileNotFoundError(f"A-train's results {path} not found: run A-train first "
                                    "(hw2 run A-train) or set `checkpoint` to a best.pt")
        got = io.read_json(path, what="A-train results")
        checkpoint, run_id = got.get("checkpoint"), got.get("run_id")
        if not checkpoint:
            raise ValueError(f"{path} names no checkpoint; run A-train again")
        if got.get("warnings"):
            warning = ("The A-train model was NOT ImageNet-pretrained (random init): these are the "
                       "features of a short from-scratch run, not of an ImageNet ResNet-50.")
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found: run A-train first")
    model, cfg = load_trained(checkpoint, device)
    if not cfg.get("pretrained") and warning is None:
        warning = ("The A-train model was NOT ImageNet-pretrained: these are the features of a "
                   "from-scratch run, not of an ImageNet ResNet-50.")
    for p in model.parameters():
        p.requires_grad_(False)
    source = {"run_id": run_id, "checkpoint": str(checkpoint),
              "sha256": io.sha256_file(checkpoint)[:16]}
    return model, cfg, source, warning


# The report's tiles (Figures 3–6).
REPORT_TILES = ("Pasture_1.jpg", "Industrial_1.jpg")


def choose_tiles(ds, class_names, tile_files=REPORT_TILES) -> tuple[dict, dict, list[str]]:
    """One tile per chosen class, as a 3×S×S float image in [0, 1]: the file of `tile_files`
    (matched by file name, from whichever split holds it) that belongs to the class; where none
    does — a user's own data — the first file of that class (by path). A chosen class the dataset
    lacks is replaced by the first of its classes not yet chosen. Returns (tiles, {class: {"file",
    "split"}}, notes saying every fallback and why)."""
    names = [str(Path(p).name) for p in ds.paths]
    by_name: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_name.setdefault(n, []).append(i)
    labels = ds.y.numpy()
    notes, chosen = [], []
    for c in class_names:
        if c in ds.classes:
            chosen.append(c)
            continue
        spare = [k for k in ds.classes if k not in class_names and k not in chosen]
        if not spare:
            raise ValueError(f"tile class {c!r} is not in the dataset's classes {ds.classes}, "
                             "and no other class is left to take its place: choose "
                             "tile_classes from those")
        chosen.append(spare[0])
        notes.append(f"class {c!r} is not in this dataset's classes: using its class "
                     f"{spare[0]!r} instead")
    tiles, info = {}, {}
    for c in chosen:
        k = ds.classes.index(c)
        named = [i for f in tile_files for i in by_name.get(str(f), []) if labels[i] == k]
        if named:
            row = named[0]
        else:
            row = min(np.flatnonzero(labels == k), key=lambda i: ds.paths[i])
            notes.append(f"no file of tile_files ({', '.join(map(str, tile_files))}) is a {c} "
                         f"tile here: using the class's first file, {ds.paths[row]}")
        tiles[c] = ds.x[row].float() / 255
        info[c] = {"file": str(ds.paths[row]), "split": str(ds.split[row])}
    return tiles, info, notes


def tiles_text(info: dict, notes: list[str]) -> str:
    """What was chosen (file and split of each tile) and why, for the page."""
    chosen = "; ".join(f"{c}: {v['file']} (from the {v['split']} split)" for c, v in info.items())
    return f"Tiles — {chosen}." + "".join(f"\n- {n}" for n in notes)


def visualize_tiles(model, cfg, tiles: dict, classes, *, layer, channel, grid_channels,
                    vis_size, dream_octaves, dream_steps, dream_lr, am_steps, am_lr, am_param,
                    seed, device) -> dict:
    """For each tile: the channel it excites (or the one asked for), its top channels, the
    model's prediction, DeepDream, activation maximization from the tile and from noise, and the
    activation traces. {tile class: {...}}."""
    mean, std = normalization(cfg)
    out = {}
    from_noise: dict[int, str] = {}  # channel → the tile whose from-noise image is that channel's
    for name, img in tiles.items():
        act, prob = featvis.channel_activations(model, img, layer, size=vis_size, mean=mean,
                                                std=std, device=device)
        ch, top = featvis.choose_channels(act, channel, grid_channels)
        big = featvis.resize_image(img, vis_size)
        gen = torch.Generator().manual_seed(seed)
        dream = featvis.deepdream(model, big, layer, channels=[ch], octaves=dream_octaves,
                                  steps=dream_steps, lr=dream_lr, mean=mean, std=std,
                                  device=device, generator=gen)
        common = dict(steps=am_steps, lr=am_lr, param=am_param, mean=mean, std=std,
                      device=device, seed=seed)
        am_tile, tr_tile = featvis.activation_maximization(model, layer, ch, init=big, **common)
        shared = from_noise.get(ch)  # from noise the tile plays no part: one image a channel
        if shared is None:
            am_noise, tr_noise = featvis.activation_maximization(
                model, layer, ch, init="noise", size=(vis_size, vis_size), **common)
            from_noise[ch] = name
        else:
            am_noise, tr_noise = out[shared]["images"][3], out[shared]["traces"]["from noise"]
        out[name] = {"channel": ch, "top": top, "activation": float(act[ch]),
                     "predicted": classes[int(prob.argmax())], "prob": float(prob.max()),
                     "images": [big, dream, am_tile, am_noise],
                     "traces": {"from tile": tr_tile, "from noise": tr_noise},
                     "noise_shared_with": shared}
    return out


def channel_grid(model, cfg, vis: dict, *, layer, size, am_steps, am_lr, am_param, seed,
                 device) -> tuple[list, list[str]]:
    """Activation maximization from noise of each tile's top channels: (images, titles)."""
    mean, std = normalization(cfg)
    tiles_of: dict[int, list[str]] = {}  # a channel in several tiles' tops is shown once
    for name, v in vis.items():
        for ch in v["top"]:
            tiles_of.setdefault(ch, []).append(name)
    images, titles = [], []
    for ch, names in tiles_of.items():
        img, _ = featvis.activation_maximization(
            model, layer, ch, init="noise", size=(size, size), steps=am_steps, lr=am_lr,
            param=am_param, mean=mean, std=std, device=device, seed=seed)
        images.append(img)
        titles.append(f"{' & '.join(names)} top: ch {ch}")
    return images, titles


def vis_headline_rows(vis: dict, run_id: str) -> list[dict]:
    """The index's rows for A-vis: each tile's activation-maximization gain from noise, with the
    A-train run whose model it visualized."""
    rows, seen = [], {}
    for name, v in vis.items():
        if v.get("noise_shared_with"):  # the same channel's image from noise: one row for both
            seen[v["channel"]]["name"] = seen[v["channel"]]["name"].replace(
                ": act.", f" and {name}: act.", 1).replace("(its top channel)",
                                                            "(the top channel of both tiles)")
            continue
        # the channel is the run's outcome, not the row's name: `hw2 compare` keys rows by name
        row = headline(f"{name}: act. max. gain from noise (its top channel)",
                       v["traces"]["from noise"][-1] - v["traces"]["from noise"][0],
                       note=f"channel {v['channel']}", run_id=run_id)
        seen[v["channel"]] = row
        rows.append(row)
    return rows


def vis_metrics(vis: dict) -> dict:
    """A-vis's results.json metrics: each tile's channel, top channels, prediction, traces."""
    return {name: {"channel": v["channel"], "top_channels": v["top"], "predicted": v["predicted"],
                   "traces": v["traces"]} for name, v in vis.items()}


def vis_findings(vis: dict) -> list[str]:
    """What the optimizations reached, per tile, computed from their activation traces."""
    lines = []
    for name, v in vis.items():
        t, n = v["traces"]["from tile"], v["traces"]["from noise"]
        right = "correctly" if v["predicted"] == name else f"as {v['predicted']}"
        noise = (f"from noise it is {v['noise_shared_with']}'s image (the same channel, the "
                 "same start)" if v.get("noise_shared_with") else
                 f"from {n[0]:.3f} to {n[-1]:.3f} from noise ({_ratio(n)})")
        lines.append(
            f"{name}: the model classifies the tile {right} ({v['prob']:.2f}); channel "
            f"{v['channel']} (mean activation {v['activation']:.3f} on the tile) rose from "
            f"{t[0]:.3f} to {t[-1]:.3f} optimizing from the tile ({_ratio(t)}); {noise}.")
    return lines


def _ratio(trace) -> str:
    return f"×{trace[-1] / trace[0]:.1f}" if trace[0] > 0 else f"{trace[-1] - trace[0]:+.3f}"
