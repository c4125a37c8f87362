"""Tests of hw2lib.study.plots: figures checked by content (lines, texts, colours, scales), not just
"it ran"; no figure left open in pyplot; returned figures display once in a notebook kernel."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hw2lib.study import plots  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


def _hist(n, base=0.0):
    return [{"epoch": e + 1, "train_loss": 2.0 - 0.1 * e, "val_loss": 2.1 - 0.1 * e,
             "train_acc": base + 0.1 * e, "val_acc": base + 0.08 * e} for e in range(n)]


@pytest.fixture(autouse=True)
def _no_pyplot_leak():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a plotting function left a figure open in pyplot"


# ------------------------------------------------------------------------------------------------
# curves


def test_plot_history_panels_styles_and_colours():
    fig = plots.plot_history({"a": _hist(5), "b": _hist(3, 0.2)})
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "accuracy"]
    for ax in axes:
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
        assert len(lines) == 4  # 2 runs × (train, val)
        by = {ln.get_label(): ln for ln in lines}
        assert by["a (train)"].get_linestyle() == "--" and by["a (val)"].get_linestyle() == "-"
        assert by["a (train)"].get_color() == by["a (val)"].get_color()
        assert by["a (val)"].get_color() != by["b (val)"].get_color()
    acc = {ln.get_label(): ln for ln in axes[1].get_lines()}
    np.testing.assert_allclose(acc["b (val)"].get_ydata(), [0.2, 0.28, 0.36])
    np.testing.assert_allclose(acc["a (val)"].get_xdata(), [1, 2, 3, 4, 5])
    assert _png(fig).startswith(b"\x89PNG")


def test_plot_history_skips_missing_keys_and_single_metric():
    hist = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]
    fig = plots.plot_history({"only-train": hist}, metrics="loss")
    (ax,) = fig.get_axes()
    labels = [ln.get_label() for ln in ax.get_lines() if len(ln.get_xdata())]
    assert labels == ["only-train (train)"]


def test_plot_curves_mean_std_band():
    seeds = [_hist(4, 0.1), _hist(4, 0.3), _hist(5, 0.5)]  # aligned on the shortest (4 epochs)
    fig = plots.plot_curves({"x": seeds[0], "y": _hist(3)}, key="val_acc", bands={"x": seeds})
    (ax,) = fig.get_axes()
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"x (mean ± std, 3 seeds)", "y"}
    mean = lines["x (mean ± std, 3 seeds)"].get_ydata()
    np.testing.assert_allclose(mean, 0.3 + 0.08 * np.arange(4))
    assert len(ax.collections) == 1  # one band, for the multi-seed run only
    verts = ax.collections[0].get_paths()[0].vertices
    assert verts[:, 1].max() == pytest.approx(0.3 + 0.24 + np.std([0.1, 0.3, 0.5]))
    assert ax.get_ylabel() == "val accuracy"


def test_epoch_axes_tick_whole_epochs_only():
    figs = [plots.plot_history({"a": _hist(3)}), plots.plot_curves({"a": _hist(3)}),
            plots.plot_lr_schedules({"c": [0.1, 0.05, 0.01]})]
    for fig in figs:
        for ax in fig.get_axes():
            fig.canvas.draw()
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            assert ax.get_xlabel() == "epoch"


def test_plot_lr_schedules_log_scale():
    fig = plots.plot_lr_schedules({"multistep": [0.1, 0.1, 0.02, 0.004], "cosine": [0.1, 0.05, 0.0]})
    (ax,) = fig.get_axes()
    assert ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    np.testing.assert_allclose(lines["multistep"].get_ydata(), [0.1, 0.1, 0.02, 0.004])
    assert np.isnan(lines["cosine"].get_ydata()[-1])  # a zero LR is not drawn on a log axis
    assert lines["multistep"].get_drawstyle() == "steps-mid"  # each epoch a step centred on it


# ------------------------------------------------------------------------------------------------
# classification figures


def test_plot_confusion_row_normalized_percent():
    cm = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    fig = plots.plot_confusion(cm, ["Forest", "River", "Pasture"], title="t")
    ax = fig.get_axes()[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["75.0", "25.0", "0.0", "0.0", "0.0", "0.0", "25.0", "25.0", "50.0"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Forest", "River", "Pasture"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Forest", "River", "Pasture"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert ax.get_title() == "t"
    raw = plots.plot_confusion(cm, ["a", "b", "c"], normalize=False).get_axes()[0]
    assert [t.get_text() for t in raw.texts][:3] == ["3", "1", "0"]


def test_plot_confusion_into_given_axes_and_shape_error():
    fig, axes = plt.subplots(1, 2)
    try:
        out = plots.plot_confusion(np.eye(2), ["a", "b"], ax=axes[1])
        assert out is fig and len(axes[1].texts) == 4 and not axes[0].texts
        assert plt.fignum_exists(fig.number)  # the caller's figure is not closed for them
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="3 class names"):
        plots.plot_confusion(np.eye(2), ["a", "b", "c"])


def test_plot_confusions_side_by_side_with_one_colour_bar():
    cms = {"ce": np.array([[4, 0], [3, 1]]), "balanced_softmax": np.array([[3, 1], [1, 3]])}
    fig = plots.plot_confusions(cms, ["head", "tail"], title="resnext18")
    heat = [ax for ax in fig.get_axes() if ax.get_title()]
    assert [ax.get_title() for ax in heat] == ["ce", "balanced_softmax"]
    assert [t.get_text() for t in heat[0].texts] == ["100.0", "0.0", "75.0", "25.0"]
    assert [t.get_text() for t in heat[1].texts] == ["75.0", "25.0", "25.0", "75.0"]
    assert len(fig.get_axes()) == 3  # two heatmaps + one colour bar
    assert fig._suptitle.get_text() == "resnext18"
    with pytest.raises(ValueError, match="no matrices"):
        plots.plot_confusions({}, ["a"])


def test_plot_class_counts_bars_annotations_log():
    classes = ["A", "B", "C"]
    fig = plots.plot_class_counts([500, 36, 10], classes, log=True)
    ax = fig.get_axes()[0]
    assert [p.get_height() for p in ax.patches] == [500, 36, 10]
    assert [t.get_text() for t in ax.texts] == ["500", "36", "10"]
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert ax.get_yscale() == "log"
    fig2 = plots.plot_class_counts({"A": 1, "B": 2, "C": 3}, classes)
    assert [p.get_height() for p in fig2.get_axes()[0].patches] == [1, 2, 3]
    assert fig2.get_axes()[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="2 counts but 3"):
        plots.plot_class_counts([1, 2], classes)


def test_plot_per_class_puts_each_class_in_its_own_place_fewest_first():
    """Issue 29: the seven head classes of a capped tail share one count; on a count axis their
    labels were stacked on one x. Now each class has its own x, fewest images first."""
    classes = ["A", "B", "C", "D"]
    per = {"ce": [0.9, 0.5, 0.1, 0.8], "balanced_softmax": [0.85, 0.7, 0.6, 0.75]}
    fig = plots.plot_per_class_vs_count(per, [150, 36, 10, 150], classes)
    ax = fig.get_axes()[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["C (10)", "B (36)", "A (150)", "D (150)"]  # ties keep their own place
    assert len(set(ax.get_xticks())) == 4
    points = [c for c in ax.collections if c.get_label() in per]
    assert len(points) == 2
    ce = points[0].get_offsets()
    np.testing.assert_allclose(ce[:, 1], [0.1, 0.5, 0.9, 0.8])
    assert (ce[:, 0] < np.arange(4)).all()  # the two methods side by side, not on top
    m0, m1 = (c.get_paths()[0].vertices.shape for c in points)
    assert m0 != m1  # different marker shapes
    spans = [c.get_label() for c in ax.patches]
    assert spans == ["few-shot classes", "medium-shot classes", "many-shot classes"]
    with pytest.raises(ValueError, match="2 values for 4 classes"):
        plots.plot_per_class_vs_count({"x": [1, 2]}, [1, 2, 3, 4], classes)


def test_a_loss_spike_puts_the_loss_panel_on_a_log_axis():
    """Issue 29: an epoch-1 val loss of 100,000 flattened the rest of the curve."""
    spiky = [{"epoch": i + 1, "train_loss": 2.0 / (i + 1), "val_loss": v, "train_acc": 0.5,
              "val_acc": 0.5} for i, v in enumerate([1e5, 2.0, 1.5, 1.2])]
    loss, acc = plots.plot_history({"run": spiky}).get_axes()
    assert loss.get_yscale() == "log" and loss.get_title() == "loss (log scale)"
    assert acc.get_yscale() == "linear"
    calm = plots.plot_history({"run": _hist(5)}).get_axes()[0]
    assert calm.get_yscale() == "linear" and calm.get_title() == "loss"


# ------------------------------------------------------------------------------------------------
# embeddings


def test_plot_embedding_legend_and_colours():
    emb = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.repeat([0, 1, 2], 10)
    fig = plots.plot_embedding(emb, labels, ["Forest", "River", "Sea"], title="tsne")
    ax = fig.get_axes()[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["Forest (10)", "River (10)", "Sea (10)"]
    tab10 = matplotlib.colormaps["tab10"]
    for i, coll in enumerate(ax.collections):
        np.testing.assert_allclose(coll.get_facecolor()[0][:3], to_rgba(tab10(i))[:3])
    assert ax.get_title() == "tsne"


# ------------------------------------------------------------------------------------------------
# images


def test_plot_image_row_and_grid_accept_tensors_and_arrays():
    t = torch.rand(3, 8, 8)
    hwc = np.full((8, 8, 3), 255, np.uint8)
    fig = plots.plot_image_row([t, hwc, t[None]], ["a", "b", "c"])
    ims = [ax.get_images()[0] for ax in fig.get_axes() if ax.get_images()]
    assert len(ims) == 3
    np.testing.assert_allclose(ims[0].get_array(), t.permute(1, 2, 0).numpy(), atol=1e-6)
    np.testing.assert_allclose(ims[1].get_array(), 1.0)
    assert [ax.get_title() for ax in fig.get_axes()] == ["a", "b", "c"]
    grid = plots.plot_image_grid([t] * 5, [str(i) for i in range(5)], ncols=2)
    assert len(grid.get_axes()) == 6  # 3 rows × 2, the spare one blank
    assert sum(bool(ax.get_images()) for ax in grid.get_axes()) == 5
    with pytest.raises(ValueError, match="3 titles for 2 images"):
        plots.plot_image_grid([t, t], ["a", "b", "c"])
    with pytest.raises(ValueError, match="cannot show"):
        plots.plot_image_row([np.zeros((4, 4, 5))])


# ------------------------------------------------------------------------------------------------
# notebooks display the returned figures exactly once


@pytest.mark.notebook
def test_figures_display_inline_in_a_kernel(tmp_path, monkeypatch):
    """Returned figures render as PNG when left as a cell's last expression or passed to
    display(), once each, and an assigned figure is not shown (the figures are closed)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("no python3 Jupyter kernel installed")
    from pathlib import Path

    monkeypatch.delenv("MPLBACKEND", raising=False)  # as in a notebook: the kernel picks inline
    root = str(Path(plots.__file__).resolve().parents[2])
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {root!r})\n"
                                  "from hw2lib.study import plots\nfrom IPython.display import display"),
        nbformat.v4.new_code_cell("plots.plot_class_counts([5, 3], ['a', 'b'])"),
        nbformat.v4.new_code_cell("display(plots.plot_lr_schedules({'c': [0.1, 0.01]}))"),
        nbformat.v4.new_code_cell("f = plots.plot_class_counts([5, 3], ['a', 'b'])"),
    ]
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    pngs = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in nb.cells]
    assert pngs == [0, 1, 1, 0], f"PNG outputs per cell: {pngs}"
