"""Figures: training curves, learning-rate schedules, confusion matrices, long-tail bar charts,
2-D embeddings (t-SNE) and image grids.

Every plotting function *returns* a `matplotlib.figure.Figure` and never calls `plt.show()`.
Figures are made with `plt.subplots` and closed with `plt.close(fig)` before they are returned:
creating them through pyplot makes Jupyter load its inline backend (which registers the PNG
formatter for `Figure`, so `display(fig)` and a figure left as a cell's last expression render
inline), and closing them keeps pyplot from accumulating figures in long loops and from showing
each one a second time at the end of the cell. A bare `Figure()` would not do: where nothing has
loaded the inline backend yet, IPython shows it as `<Figure size ...>` text only.

The numbers behind the figures come from elsewhere: `hw2lib.nets.metrics` (confusion matrices,
per-class accuracy), `hw2lib.nets.features` (t-SNE embeddings), `hw2lib.nets.featvis` (DeepDream and
activation-maximization images).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "plot_class_counts",
    "plot_confusion",
    "plot_confusions",
    "plot_curves",
    "plot_embedding",
    "plot_history",
    "plot_image_grid",
    "plot_image_row",
    "plot_lr_schedules",
    "plot_per_class_vs_count",
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
        if m == "loss" and _spiky([ln.get_ydata() for ln in ax.get_lines()]):
            ax.set_yscale("log")  # an epoch's spike would flatten the rest of the curve
            ax.set_title(f"{_pretty(m)} (log scale)")
        ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=c, lw=2, label=n) for c, n in zip(colors, histories, strict=False)]
    handles += [Line2D([], [], color="0.3", ls="--", label="train"),
                Line2D([], [], color="0.3", ls="-", label="val")]
    axes[-1].legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                    frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig)


SPIKE_RATIO = 20.0  # a loss panel whose largest value is this many times its median is log-scaled


def _spiky(series) -> bool:
    """Whether loss curves hold a spike that would flatten them on a linear axis: all positive,
    the largest value ≥ `SPIKE_RATIO` × the median."""
    values = np.concatenate([np.asarray(s, dtype=float).ravel() for s in series]) if series \
        else np.array([])
    values = values[np.isfinite(values)]
    return bool(values.size and values.min() > 0
                and values.max() >= SPIKE_RATIO * np.median(values))


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
                title: str | None = None):
    """One metric (`key`, e.g. "val_acc") across runs, one line per run.

    `bands`: run name -> the histories of several seeds of that run; such a run is drawn as the
    mean over seeds with a shaded ± 1 std band (aligned on the shortest run), and its label says
    how many seeds. Other runs are drawn from `histories` as they are.
    """
    bands = dict(bands or {})
    fig, ax = _subplots(figsize=(6.4, 4.2))
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
    return _done(fig, ax, title, True)


def _done(fig, ax, title, own: bool):
    """Title the axes; lay out and close a figure this module made (a caller's is left alone)."""
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
    return _done(fig, ax, title, own)


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
    """Per-class accuracy of each method, the classes along x from the fewest training images to
    the most (each tick "class (n)"), the methods' markers side by side at each class; bands mark
    the few-shot (< 20), medium and many-shot (> 100) classes. Classes of equal count (the head
    classes of a capped tail) each keep their own place."""
    from hw2lib.nets.metrics import shot_groups

    counts = _counts_list(counts, classes)
    order = np.argsort(counts, kind="stable")
    markers = "osD^v<>pPX*h"
    k = max(len(per_class_acc), 1)
    fig, ax = _subplots(figsize=(max(8.6, 0.75 * len(classes) + 3), 4.4))
    groups = np.asarray(shot_groups(counts))[order]
    shades = {"few": "#fde2e2", "medium": "#fff4d6", "many": "#e4f2e4"}
    for g, shade in shades.items():
        where = np.flatnonzero(groups == g)
        if where.size:
            ax.axvspan(where.min() - 0.5, where.max() + 0.5, color=shade, zorder=0,
                       label=f"{g}-shot classes")
    for i, ((name, acc), color) in enumerate(
            zip(per_class_acc.items(), _colors(len(per_class_acc)), strict=True)):
        acc = np.asarray(acc, dtype=float).ravel()
        if len(acc) != len(classes):
            raise ValueError(f"per_class_acc[{name!r}] has {len(acc)} values for "
                             f"{len(classes)} classes")
        offset = (i - (k - 1) / 2) * min(0.6 / k, 0.15)
        ax.scatter(np.arange(len(classes)) + offset, acc[order], marker=markers[i % len(markers)],
                   color=color, s=42, alpha=0.9, label=name, zorder=3)
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels([f"{classes[j]} ({int(counts[j]):,})" for j in order], rotation=35, ha="right",
                       fontsize=8)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("class (training images), fewest first")
    ax.set_ylabel("per-class accuracy")
    ax.grid(alpha=0.3, axis="y")
    if per_class_acc:  # beside the axes: inside, it hides points
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig)


# ----------------------------------------------------------------------------------------------
# embeddings


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
