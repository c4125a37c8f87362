"""Figures and feature visualization: training curves, confusion matrices, long-tail bar charts,
t-SNE (openTSNE) with a kNN quality score, DeepDream and activation maximization.

Figures
    Every plotting function *returns* a `matplotlib.figure.Figure` and never calls `plt.show()`.
    Figures are made with `plt.subplots` and closed with `plt.close(fig)` before they are returned:
    creating them through pyplot makes Jupyter load its inline backend (which registers the PNG
    formatter for `Figure`, so `display(fig)` and a figure left as a cell's last expression render
    inline), and closing them keeps pyplot from accumulating figures in long loops and from showing
    each one a second time at the end of the cell. A bare `Figure()` would not do: where nothing has
    loaded the inline backend yet, IPython shows it as `<Figure size ...>` text only.

Feature visualization
    Layers are addressed by module name as in lucent's objectives ("layer4.2.conv3", channel 12).
    Hooks go through `hw2lib.metrics.capture`, a context manager, so the hook is removed on every
    exit path. The model's parameters are never changed and get no `.grad`:
    gradients are taken with `torch.autograd.grad` with respect to the image only, the model is put in
    eval mode for the call and its modes are restored afterwards.
    Images are 3×H×W float tensors in [0, 1] pixel space; `mean`/`std` normalization is applied
    inside, just before the model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from hw2lib.metrics import capture

# ImageNet statistics: the default normalization of the pretrained backbones (pass the model's own).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# lucent / lucid: square root of the ImageNet colour correlation (for the decorrelated FFT image).
_COLOR_CORRELATION_SVD_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)

__all__ = [
    "activation_maximization",
    "deepdream",
    "knn_accuracy",
    "plot_class_counts",
    "plot_confusion",
    "plot_curves",
    "plot_embedding",
    "plot_history",
    "plot_image_grid",
    "plot_image_row",
    "plot_lr_schedules",
    "plot_per_class_vs_count",
    "resize_image",
    "tsne_embed",
]


# ----------------------------------------------------------------------------------------------
# figure plumbing


def _subplots(nrows=1, ncols=1, **kw):
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, **kw)


def _closes_on_error(fn):
    """A plotting function that raises leaves no half-made figure open in pyplot."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib.pyplot as plt

        before = set(plt.get_fignums())
        try:
            return fn(*args, **kwargs)
        except BaseException:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            raise

    return wrapper


def _finish(fig):
    """Close the figure in pyplot's registry (it stays drawable and displayable) and return it."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


def _colors(n: int):
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _epochs(history: Sequence[Mapping], n: int) -> np.ndarray:
    if history and all("epoch" in h for h in history[:n]):
        return np.array([h["epoch"] for h in history[:n]], dtype=float)
    return np.arange(1, n + 1, dtype=float)


def _series(history: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, values) of the entries that have `key`; None when no entry has it."""
    rows = [h for h in history if key in h and h[key] is not None]
    if not rows:
        return None
    x = _epochs(rows, len(rows))
    y = np.array([float(h[key]) for h in rows])
    return x, y


def _pretty(key: str) -> str:
    names = {"acc": "accuracy", "bal_acc": "balanced accuracy", "loss": "loss", "lr": "learning rate"}
    for prefix, word in (("train_", "train "), ("val_", "val "), ("test_", "test ")):
        if key.startswith(prefix):
            return word + names.get(key[len(prefix):], key[len(prefix):])
    return names.get(key, key)


def _epoch_axis(ax) -> None:
    """An x axis of whole epochs (no 1.25, 1.5, ... ticks on short runs)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ----------------------------------------------------------------------------------------------
# training curves


@_closes_on_error
def plot_history(histories: Mapping[str, Sequence[Mapping]], metrics=("loss", "acc"), *,
                 title: str | None = None):
    """Train (dashed) and val (solid) curves of each run, one panel per metric, one colour per run.

    `histories`: run name -> list of per-epoch dicts with flat keys (`epoch`, `train_loss`,
    `val_loss`, `train_acc`, `val_acc`, ...). A run without a key is left out of that panel.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not metrics:
        raise ValueError("plot_history: metrics is empty; pass e.g. ('loss', 'acc')")
    from matplotlib.lines import Line2D

    fig, axes = _subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    axes = axes[0]
    colors = _colors(len(histories))
    for ax, m in zip(axes, metrics, strict=True):
        for color, (name, hist) in zip(colors, histories.items(), strict=False):
            for split, style in (("train", "--"), ("val", "-")):
                s = _series(hist, f"{split}_{m}")
                if s is not None:
                    ax.plot(*s, style, color=color, lw=1.6, marker="o" if len(s[0]) == 1 else None,
                            label=f"{name} ({split})")
        _epoch_axis(ax)
        ax.set_ylabel(_pretty(m))
        ax.set_title(_pretty(m))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, lw=2, label=n) for c, n in zip(colors, histories, strict=False)]
    handles += [Line2D([], [], color="0.3", ls="--", label="train"),
                Line2D([], [], color="0.3", ls="-", label="val")]
    axes[-1].legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                    frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig)


def _mean_std(runs: Sequence[Sequence[Mapping]], key: str):
    series = [s for s in (_series(h, key) for h in runs) if s is not None]
    if not series:
        return None
    n = min(len(s[1]) for s in series)
    ys = np.stack([s[1][:n] for s in series])
    return series[0][0][:n], ys.mean(0), ys.std(0), len(series)


@_closes_on_error
def plot_curves(histories: Mapping[str, Sequence[Mapping]], key: str = "val_acc",
                bands: Mapping[str, Sequence[Sequence[Mapping]]] | None = None, *,
                title: str | None = None, ax=None):
    """One metric (`key`, e.g. "val_acc") across runs, one line per run.

    `bands`: run name -> the histories of several seeds of that run; such a run is drawn as the
    mean over seeds with a shaded ± 1 std band (aligned on the shortest run), and its label says
    how many seeds. Other runs are drawn from `histories` as they are.
    """
    bands = dict(bands or {})
    own = ax is None
    if own:
        fig, ax = _subplots(figsize=(6.4, 4.2))
    else:
        fig = ax.figure
    names = list(histories) + [n for n in bands if n not in histories]
    for color, name in zip(_colors(len(names)), names, strict=True):
        seeds = bands.get(name)
        stats = _mean_std(seeds, key) if seeds and len(seeds) > 1 else None
        if stats is not None:
            x, mu, sd, n = stats
            ax.plot(x, mu, color=color, lw=1.8, label=f"{name} (mean ± std, {n} seeds)")
            ax.fill_between(x, mu - sd, mu + sd, color=color, alpha=0.2, lw=0)
            continue
        hist = histories.get(name) or (seeds[0] if seeds else [])
        s = _series(hist, key)
        if s is not None:
            ax.plot(*s, color=color, lw=1.8, marker="o" if len(s[0]) == 1 else None, label=name)
    _epoch_axis(ax)
    ax.set_ylabel(_pretty(key))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    if not own:  # the caller's figure: leave its layout and pyplot state alone
        return fig
    fig.tight_layout()
    return _finish(fig)


@_closes_on_error
def plot_lr_schedules(schedules: Mapping[str, Sequence[float]], *, title: str | None = None):
    """Learning rate per epoch of each schedule on a log y axis (non-positive values are skipped)."""
    fig, ax = _subplots(figsize=(6.4, 4.0))
    for color, (name, lrs) in zip(_colors(len(schedules)), schedules.items(), strict=True):
        y = np.asarray(lrs, dtype=float)
        y = np.where(y > 0, y, np.nan)
        # one step per epoch, centred on it, with a dot at each epoch's own value
        ax.plot(np.arange(1, len(y) + 1), y, color=color, lw=1.8, label=name,
                drawstyle="steps-mid", marker="o", markersize=3)
    ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3, which="both")
    if schedules:
        ax.legend(fontsize=8)
    ax.set_title(title or "learning-rate schedules")
    fig.tight_layout()
    return _finish(fig)


# ----------------------------------------------------------------------------------------------
# classification results


def _confusion_side(k: int) -> float:
    """Inches per side of a k-class confusion heatmap: room for k annotated cells and names."""
    return max(4.5, 0.62 * k + 2.5)


@_closes_on_error
def plot_confusion(cm, classes: Sequence[str], *, title: str | None = None,
                   normalize: bool = True, ax=None, cbar: bool = True, cbar_ax=None):
    """Confusion matrix heatmap (rows: true class, columns: predicted class).

    normalize=True: each row as % of that true class (an empty row stays 0), annotated with one
    decimal; normalize=False: raw counts. cbar=False: no colour bar; cbar_ax: the axes to draw it in.
    """
    import seaborn as sns

    cm = np.asarray(cm, dtype=float)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"plot_confusion: cm has shape {cm.shape} but {k} class names were given; "
                         f"pass a {k}×{k} matrix (rows = true, columns = predicted)")
    if normalize:
        rows = cm.sum(1, keepdims=True)
        data = np.divide(100.0 * cm, rows, out=np.zeros_like(cm), where=rows > 0)
        fmt, kw, cbar_label = ".1f", {"vmin": 0.0, "vmax": 100.0}, "% of true class"
    else:
        data, fmt, kw, cbar_label = cm, ".0f", {}, "count"
    own = ax is None
    if own:
        side = _confusion_side(k)
        fig, ax = _subplots(figsize=(side + 1.0, side))
    else:
        fig = ax.figure
    sns.heatmap(data, annot=True, fmt=fmt, cmap="Blues", square=True, ax=ax,
                xticklabels=list(classes), yticklabels=list(classes),
                annot_kws={"fontsize": 7 if k > 6 else 9}, cbar=cbar, cbar_ax=cbar_ax,
                cbar_kws={"label": cbar_label} if cbar else None, **kw)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(axis="x", labelrotation=45)
    for t in ax.get_xticklabels():
        t.set_ha("right")
    ax.tick_params(axis="y", labelrotation=0)
    if title:
        ax.set_title(title)
    if not own:  # the caller's figure: leave its layout and pyplot state alone
        return fig
    fig.tight_layout()
    return _finish(fig)


@_closes_on_error
def plot_confusions(cms: Mapping[str, object], classes: Sequence[str], *,
                    title: str | None = None, normalize: bool = True):
    """Several confusion matrices side by side (title -> matrix), one colour bar on the right:
    row-normalized matrices share the 0–100 % scale, so they compare cell by cell."""
    if not cms:
        raise ValueError("plot_confusions: no matrices given")
    k, n = len(classes), len(cms)
    side = _confusion_side(k)
    # equal heatmaps and a thin colour-bar column of their own
    fig, axes = _subplots(1, n + 1, figsize=(side * n + 1.0, side), squeeze=False,
                          gridspec_kw={"width_ratios": [1.0] * n + [0.05]})
    axes = axes[0]
    for i, (ax, (name, cm)) in enumerate(zip(axes[:n], cms.items(), strict=True)):
        last = i == n - 1
        plot_confusion(cm, classes, title=name, normalize=normalize, ax=ax, cbar=last,
                       cbar_ax=axes[n] if last else None)
        if i:  # the rows are the same classes: named once, on the left
            ax.set_ylabel("")
            ax.set_yticklabels([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig)


def _counts_list(counts, classes) -> np.ndarray:
    if isinstance(counts, Mapping):
        missing = [c for c in classes if c not in counts]
        if missing:
            raise ValueError(f"counts has no entry for classes {missing}")
        counts = [counts[c] for c in classes]
    counts = np.asarray(counts, dtype=float).ravel()
    if len(counts) != len(classes):
        raise ValueError(f"{len(counts)} counts but {len(classes)} class names; give one per class")
    return counts


@_closes_on_error
def plot_class_counts(counts, classes: Sequence[str], *, log: bool = False,
                      title: str | None = None):
    """Bar chart of per-class (training) counts, each bar annotated with its count.

    `counts`: a sequence in the order of `classes`, or a dict class name -> count.
    log=True: logarithmic y axis (for long-tailed counts).
    """
    counts = _counts_list(counts, classes)
    fig, ax = _subplots(figsize=(max(6.0, 0.65 * len(classes) + 1.5), 4.0))
    x = np.arange(len(classes))
    bars = ax.bar(x, counts, color=_colors(len(classes)))
    ax.bar_label(bars, labels=[f"{int(c)}" for c in counts], fontsize=8, padding=2)
    ax.set_xticks(x, list(classes), rotation=45, ha="right")
    ax.set_ylabel("images")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(top=max(counts.max(), 1) * 3)
    else:
        ax.set_ylim(top=max(counts.max(), 1) * 1.12)
    ax.set_title(title or f"images per class (total {int(counts.sum())})")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _finish(fig)


@_closes_on_error
def plot_per_class_vs_count(per_class_acc: Mapping[str, Sequence[float]], counts,
                            classes: Sequence[str], *, title: str | None = None):
    """Per-class accuracy against the class's training count (log x), one marker per method.

    Points of one class lie on one vertical line; the class name is written once at the top of it.
    """
    counts = _counts_list(counts, classes)
    if np.any(counts <= 0):
        raise ValueError("plot_per_class_vs_count: counts must be positive (log x axis)")
    markers = "osD^v<>pPX*h"
    fig, ax = _subplots(figsize=(8.6, 4.4))
    for i, ((name, acc), color) in enumerate(
            zip(per_class_acc.items(), _colors(len(per_class_acc)), strict=True)):
        acc = np.asarray(acc, dtype=float).ravel()
        if len(acc) != len(classes):
            raise ValueError(f"per_class_acc[{name!r}] has {len(acc)} values for "
                             f"{len(classes)} classes")
        ax.scatter(counts, acc, marker=markers[i % len(markers)], color=color, s=42, alpha=0.85,
                   label=name, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("per-class accuracy")
    for c, name in zip(counts, classes, strict=True):
        ax.axvline(c, color="0.85", lw=0.8, zorder=1)
        ax.annotate(name, (c, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                    textcoords="offset points", rotation=60, fontsize=7, ha="left", va="bottom")
    ax.grid(alpha=0.3, which="both")
    if per_class_acc:  # beside the axes: inside, it hides the points of the head classes
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig)


# ----------------------------------------------------------------------------------------------
# t-SNE


def tsne_embed(features, *, seed: int = 0, perplexity: float = 30, n_jobs: int = 1) -> np.ndarray:
    """2-D openTSNE embedding (N×2 float64) of N×D features, reproducible for a seed.

    openTSNE lowers a perplexity that is too large for N (with a warning).
    """
    from openTSNE import TSNE

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"tsne_embed: features must be N×D, got shape {x.shape}")
    if len(x) < 4:
        raise ValueError(f"tsne_embed: needs at least 4 points, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("tsne_embed: features contain NaN or inf")
    emb = TSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs, verbose=False).fit(x)
    return np.asarray(emb, dtype=np.float64)


def knn_accuracy(embedding, labels, k: int = 10) -> float:
    """Leave-one-out kNN accuracy of `labels` in the embedding: each point is classified by the
    majority label of its k nearest *other* points (ties go to the smallest label)."""
    from sklearn.neighbors import NearestNeighbors

    emb = np.asarray(embedding, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if emb.ndim != 2 or len(emb) != len(y):
        raise ValueError(f"knn_accuracy: embedding {emb.shape} and labels {y.shape} must be N×d "
                         f"and N")
    if not 1 <= k < len(y):
        raise ValueError(f"knn_accuracy: k={k} must be between 1 and N-1={len(y) - 1}")
    _, y_idx = np.unique(y, return_inverse=True)
    # kneighbors() without X leaves each point out of its own neighbour list (duplicates included).
    nn = NearestNeighbors(n_neighbors=k).fit(emb)
    idx = nn.kneighbors(return_distance=False)
    votes = np.zeros((len(y), y_idx.max() + 1), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(y)), k), y_idx[idx].ravel()), 1)
    return float(np.mean(votes.argmax(1) == y_idx))


@_closes_on_error
def plot_embedding(embedding, labels, classes: Sequence[str], *, title: str | None = None,
                   point_size: float = 8.0):
    """Scatter of a 2-D embedding coloured by class (tab10), with a legend of class names."""
    emb = np.asarray(embedding, dtype=float)
    y = np.asarray(labels).ravel()
    if emb.ndim != 2 or emb.shape[1] != 2 or len(emb) != len(y):
        raise ValueError(f"plot_embedding: need an N×2 embedding and N labels, got {emb.shape} "
                         f"and {y.shape}")
    fig, ax = _subplots(figsize=(7.6, 6.0))
    for c, (name, color) in enumerate(zip(classes, _colors(len(classes)), strict=True)):
        m = y == c
        if m.any():
            ax.scatter(emb[m, 0], emb[m, 1], s=point_size, color=color, label=f"{name} ({m.sum()})",
                       alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2.0,
              frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _finish(fig)


# ----------------------------------------------------------------------------------------------
# images


def _to_hwc(img) -> np.ndarray:
    """Tensor C×H×W / 1×C×H×W / H×W or numpy H×W×C / C×H×W -> float numpy H×W×C (or H×W) in [0,1]."""
    if hasattr(img, "detach"):
        t = img.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        a = t.numpy()
        if a.ndim == 3:
            a = np.moveaxis(a, 0, -1)
    else:
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
            a = np.moveaxis(a, 0, -1)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"cannot show an image of shape {tuple(np.shape(img))}; give 3×H×W, "
                         f"H×W×3 or H×W")
    return np.clip(a, 0.0, 1.0)


@_closes_on_error
def plot_image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 4, *,
                    size: float = 2.6, suptitle: str | None = None):
    """Images (tensors 3×H×W in [0,1], uint8, or H×W×C numpy) in a grid of `ncols` columns."""
    images = list(images)
    if not images:
        raise ValueError("plot_image_grid: no images")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    ncols = max(1, min(int(ncols), len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = _subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < len(images):
            a = _to_hwc(images[i])
            ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1,
                      interpolation="nearest" if max(a.shape[:2]) < 96 else "antialiased")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return _finish(fig)


@_closes_on_error
def plot_image_row(images: Sequence, titles: Sequence[str] | None = None, *, size: float = 3.0,
                   suptitle: str | None = None):
    """Images side by side in one row (see `plot_image_grid`)."""
    return plot_image_grid(images, titles, ncols=max(1, len(images)), size=size, suptitle=suptitle)


# ----------------------------------------------------------------------------------------------
# model mode


@contextmanager
def _eval_mode(model):
    """model.eval() for the body; every submodule's training flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in modes:
            m.training = t


# ----------------------------------------------------------------------------------------------
# image helpers for the optimizations


def _model_device(model, device):
    """The model's device; `device`, when given, must be of the same type (the model is not moved)."""
    import torch

    p = next(iter(model.parameters()), None)
    have = p.device if p is not None else torch.device("cpu")
    if device is None:
        return have
    device = torch.device(device)
    if p is None:
        return device
    if device.type != have.type or (device.index is not None and device.index != have.index):
        raise ValueError(f"device={device} but the model's parameters are on {have}; move the "
                         f"model first (model.to(device)) or pass device=None")
    return have


def _as_image(img, name: str = "image"):
    """3×H×W float32 tensor in [0,1] (CPU) from a tensor (3×H×W, 1×3×H×W, uint8 or float) or an
    H×W×3 / 3×H×W numpy array."""
    import torch

    if isinstance(img, np.ndarray):
        a = img
        if a.ndim == 3 and a.shape[-1] == 3 and a.shape[0] != 3:
            a = np.moveaxis(a, -1, 0)
        t = torch.from_numpy(np.ascontiguousarray(a))
    elif isinstance(img, torch.Tensor):
        t = img.detach().cpu()
    else:
        raise ValueError(f"{name} must be a 3×H×W tensor or an image array, got {type(img).__name__}")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"{name} must be 3×H×W (RGB, channels first), got shape {tuple(t.shape)}")
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return t.clamp(0.0, 1.0).contiguous()


def resize_image(image, size, mode: str = "bicubic"):
    """Resize a 3×H×W image in [0,1] to `size` (int or (H, W)); result clipped to [0,1]."""
    import torch.nn.functional as F

    x = _as_image(image)
    hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if tuple(x.shape[1:]) == hw:
        return x.clone()
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kw["antialias"] = True
    return F.interpolate(x[None], size=hw, mode=mode, **kw)[0].clamp(0.0, 1.0)


def _normalizer(mean, std, device):
    import torch

    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    if m.numel() != 3 or s.numel() != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
    return lambda x: (x - m) / s


def _check_channels(act, channels, layer):
    c = act.shape[1]
    bad = [ch for ch in channels if not 0 <= ch < c]
    if bad:
        raise ValueError(f"channel(s) {bad} out of range: layer {layer!r} has {c} channels "
                         f"(0..{c - 1})")


def _roll(x, gen, jitter: int):
    import torch

    if jitter <= 0:
        return x, (0, 0)
    dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1)), (dy, dx)


def _gaussian_blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad_mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, r, r), mode=pad_mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _octave_sizes(h: int, w: int, octaves: int, scale: float, min_size: int):
    sizes = []
    for i in range(max(1, int(octaves)) - 1, -1, -1):
        f = scale ** i
        hh, ww = round(h / f), round(w / f)
        if min(hh, ww) < min(min_size, h, w):
            continue
        if not sizes or sizes[-1] != (hh, ww):
            sizes.append((hh, ww))
    if not sizes or sizes[-1] != (h, w):
        sizes.append((h, w))
    return sizes


# ----------------------------------------------------------------------------------------------
# DeepDream


def deepdream(model, image, layer: str, *, channels=None, octaves: int = 4,
              octave_scale: float = 1.4, steps: int = 20, lr: float = 0.02, jitter: int = 8,
              mean=_IMAGENET_MEAN, std=_IMAGENET_STD, device=None, generator=None,
              size=None, min_size: int = 32):
    """DeepDream: gradient ascent on the image to amplify what `layer` responds to.

    Objective: channels=None -> mean of the squared activation over all channels (the classic
    DeepDream L2 objective: amplify whatever the layer already sees, whatever its sign);
    channels=int or list -> mean activation of those channels.

    Octaves: the image is processed from its smallest version (÷ octave_scale**(octaves-1),
    octaves smaller than `min_size` px skipped) up to full size; at each octave the detail added so
    far is upsampled and added to the resized original (classic DeepDream). Each of `steps` steps
    per octave: random roll by up to ±`jitter` px (undone on the gradient), gradient w.r.t. the
    [0,1] image (normalized by `mean`/`std` inside), step of `lr` × gradient / mean(|gradient|),
    clip to [0,1].

    image: 3×H×W in [0,1] (float or uint8); `size` (int or (H, W)) resizes it first (e.g. 224 for
    a 64×64 tile). generator: torch.Generator for the rolls (default: seeded 0, reproducible).
    Returns the dreamed image, 3×H×W float32 in [0,1] on the CPU.
    """
    import torch
    import torch.nn.functional as F

    if octaves < 1 or steps < 0 or octave_scale <= 1.0:
        raise ValueError(f"deepdream needs octaves >= 1, steps >= 0 and octave_scale > 1, got "
                         f"octaves={octaves}, steps={steps}, octave_scale={octave_scale}")
    if channels is not None:
        channels = [int(channels)] if np.isscalar(channels) else [int(c) for c in channels]
        if not channels:
            raise ValueError("channels is empty; pass None for all channels or a list of indices")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    dev = _model_device(model, device)
    base = _as_image(image) if size is None else resize_image(image, size)
    h, w = base.shape[1:]
    base = base.to(dev)[None]
    norm = _normalizer(mean, std, dev)

    def objective(act):
        if channels is None:
            return act.pow(2).mean()
        return act[:, channels].mean()

    detail = None
    with _eval_mode(model), capture(model, layer, stop=True) as cap:
        checked = False
        for hw in _octave_sizes(h, w, octaves, octave_scale, min_size):
            base_o = F.interpolate(base, size=hw, mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0, 1)
            if detail is None:
                detail = torch.zeros_like(base_o)
            else:
                detail = F.interpolate(detail, size=hw, mode="bilinear", align_corners=False)
            x = (base_o + detail).clamp(0, 1)
            j = min(int(jitter), min(hw) // 2)
            for _ in range(steps):
                xr, (dy, dx) = _roll(x, gen, j)
                xr = xr.detach().requires_grad_(True)
                with torch.enable_grad():
                    act = cap.run(norm(xr))
                    if not checked and channels is not None:
                        _check_channels(act, channels, layer)
                    checked = True
                    (g,) = torch.autograd.grad(objective(act), xr)
                g = torch.roll(g, shifts=(-dy, -dx), dims=(-2, -1))
                with torch.no_grad():
                    x = (x + lr * g / (g.abs().mean() + 1e-8)).clamp(0, 1)
            detail = x - base_o
    out = (base_o + detail) if detail is not None else base
    return out[0].detach().clamp(0, 1).float().cpu()


# ----------------------------------------------------------------------------------------------
# activation maximization


def _rfft2d_freqs(h: int, w: int):
    import torch

    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class _FFTImage:
    """lucent's decorrelated Fourier image: spectrum scaled by 1/f, /4, colour decorrelation,
    sigmoid -> [0,1]. `from_image` inverts it exactly (for initializing from a tile)."""

    def __init__(self, h, w, device, decorrelate: bool, decay_power: float = 1.0):
        import torch

        self.h, self.w, self.decorrelate = h, w, decorrelate
        freqs = _rfft2d_freqs(h, w)
        self.scale = (1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power).to(device)
        c = torch.tensor(_COLOR_CORRELATION_SVD_SQRT, dtype=torch.float32)
        c = c / c.norm(dim=0).max()
        self.color = c.to(device)

    def image(self, spectrum):
        import torch

        spec = torch.view_as_complex(spectrum) * self.scale
        x = torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho") / 4.0
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", self.color, x)
        return torch.sigmoid(x)

    def from_image(self, img):
        import torch

        x = torch.logit(img.clamp(1e-3, 1 - 1e-3))
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.color), x)
        spec = torch.fft.rfft2(x * 4.0, norm="ortho") / self.scale
        return torch.view_as_real(spec).contiguous()


def activation_maximization(model, layer: str, channel: int, *, init="noise", size=None,
                            steps: int = 128, lr: float = 0.05, param: str = "fft",
                            jitter: int = 8, scale_jitter: float = 0.05, blur_every: int = 4,
                            blur_sigma: float = 0.5, weight_decay: float = 1e-3,
                            decorrelate: bool = True, mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
                            device=None, seed: int = 0):
    """Optimize an input image (Adam) to maximize the mean activation of `channel` of `layer`.

    init: "noise" (an image of `size`, int or (H, W), default 128) or a 3×H×W image in [0,1]
    (e.g. a tile; `size` then resizes it).
    param: "fft" — lucent's decorrelated Fourier parameterization (spectrum scaled by 1/f, colour
    decorrelation when `decorrelate`, sigmoid to [0,1]): few high frequencies, so an image rather
    than noise; "pixel" — the pixels themselves, clipped to [0,1], with a Gaussian blur of
    `blur_sigma` px every `blur_every` steps (0: never).
    Regularization on both: a random roll of up to ±`jitter` px and a random rescale by up to
    ±`scale_jitter` at each step (robustness transforms), and `weight_decay`: the parameter is
    shrunk by this fraction each step, i.e. pulled towards mid-grey.
    Deterministic for a `seed` on a given device (local generator). steps=0 returns the start image.

    Returns (image 3×H×W float32 in [0,1] on the CPU, trace): trace[i] is the objective (mean
    activation of the channel for the transformed image) at step i.
    """
    import torch
    import torch.nn.functional as F

    if param not in ("fft", "pixel"):
        raise ValueError(f"param must be 'fft' or 'pixel', got {param!r}")
    if steps < 0 or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    if not 0 <= weight_decay < 1:
        raise ValueError(f"weight_decay is a per-step fraction in [0, 1), got {weight_decay}")
    channel = int(channel)
    gen = torch.Generator().manual_seed(int(seed))
    dev = _model_device(model, device)
    norm = _normalizer(mean, std, dev)

    if isinstance(init, str):
        if init != "noise":
            raise ValueError(f"init must be 'noise' or a 3×H×W image tensor, got {init!r}")
        s = 128 if size is None else size
        h, w = (int(s), int(s)) if np.isscalar(s) else (int(s[0]), int(s[1]))
        start = None
    else:
        start = _as_image(init, "init") if size is None else resize_image(init, size)
        h, w = start.shape[1:]

    if param == "fft":
        fft = _FFTImage(h, w, dev, decorrelate)
        if start is None:
            p0 = 0.01 * torch.randn(1, 3, h, w // 2 + 1, 2, generator=gen)
            p0 = p0.to(dev)
        else:
            p0 = fft.from_image(start.to(dev)[None])
        to_image = fft.image
    else:
        if start is None:
            p0 = (0.1 * torch.randn(1, 3, h, w, generator=gen)).clamp(-0.5, 0.5).to(dev)
        else:
            p0 = start.to(dev)[None] - 0.5
        to_image = lambda q: q + 0.5  # noqa: E731
    q = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=lr)
    trace: list[float] = []
    j = min(int(jitter), min(h, w) // 2)

    with _eval_mode(model), capture(model, layer, stop=True) as cap:
        for step in range(steps):
            with torch.enable_grad():
                x = to_image(q)
                x, _ = _roll(x, gen, j)
                if scale_jitter > 0:
                    f = 1.0 + scale_jitter * (2 * float(torch.rand((), generator=gen)) - 1)
                    hw = (max(1, round(h * f)), max(1, round(w * f)))
                    x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
                act = cap.run(norm(x))
                if step == 0:
                    _check_channels(act, [channel], layer)
                obj = act[:, channel].mean()
                (g,) = torch.autograd.grad(-obj, q)
            trace.append(float(obj.detach()))
            q.grad = g
            opt.step()
            with torch.no_grad():
                if weight_decay:
                    q.mul_(1.0 - weight_decay)
                if param == "pixel":
                    if blur_every and (step + 1) % blur_every == 0:
                        q.copy_(_gaussian_blur(q + 0.5, blur_sigma) - 0.5)
                    q.clamp_(-0.5, 0.5)
        if steps == 0:  # still check the layer and channel exist
            with torch.no_grad():
                _check_channels(cap.run(norm(to_image(q))), [channel], layer)
    with torch.no_grad():
        img = to_image(q)[0]
    return img.detach().clamp(0, 1).float().cpu(), trace
