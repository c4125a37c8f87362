"""Metrics (accuracy, balanced and per-class accuracy, confusion matrix, many/medium/few-shot
groups), hooks that capture a layer's output, feature extraction for t-SNE, predictions export.

Labels may be NumPy arrays, torch tensors or lists. Accuracies are fractions in [0, 1]; a class or
group without samples has accuracy NaN (not 0: nothing was measured).
"""

from __future__ import annotations

import csv
import difflib
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics as skm
from torch import nn

GROUPS = ("many", "medium", "few")


def _labels(y, name: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {y.shape} "
                         "(take logits.argmax(1) for predictions)")
    return y.astype(np.int64, copy=False)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length ({len(t)} vs {len(p)})")
    return t, p


def _check_range(y: np.ndarray, num_classes: int, name: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} holds labels outside [0, num_classes={num_classes}): "
                         f"min {y.min()}, max {y.max()}")


def accuracy(y_true, y_pred) -> float:
    """Fraction of predictions equal to the true label (NaN when there are none)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if len(t) else float("nan")


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean per-class recall over the classes present in `y_true` (scikit-learn's
    `balanced_accuracy_score`); NaN when there are no samples."""
    t, p = _pair(y_true, y_pred)
    if not len(t):
        return float("nan")
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected here
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(t, p))


def per_class_accuracy(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Recall of each class 0..num_classes-1 (float64); NaN for a class absent from `y_true`."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def confusion_matrix(y_true, y_pred, num_classes: int, normalize: str | None = None) -> np.ndarray:
    """C×C matrix, rows = true class, columns = predicted (scikit-learn, labels=range(C)).

    normalize: None (counts, int64), "true" (rows sum to 1), "pred" (columns) or "all"; a row or
    column without samples is 0 after normalizing.
    """
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    t, p = _pair(y_true, y_pred)
    _check_range(t, num_classes, "y_true")
    _check_range(p, num_classes, "y_pred")
    if not len(t):
        return np.zeros((num_classes, num_classes), dtype=np.float64 if normalize else np.int64)
    return skm.confusion_matrix(t, p, labels=np.arange(num_classes), normalize=normalize)


def shot_groups(train_counts, many: int = 100, few: int = 20) -> list[str]:
    """"many" (more than `many` training images), "medium" (`few`..`many`, both inclusive) or
    "few" (fewer than `few`) for each class, by its number of training images."""
    counts = np.asarray(train_counts)
    return ["many" if c > many else "few" if c < few else "medium" for c in counts]


def group_accuracy(y_true, y_pred, train_counts, *, many: int = 100,
                   few: int = 20) -> dict[str, float]:
    """Many/medium/few-shot accuracy: the mean per-class accuracy over the classes of each group
    (as in Kang et al. 2020's `shot_acc`). NaN for a group without classes (or without samples)."""
    groups = shot_groups(train_counts, many=many, few=few)
    pca = per_class_accuracy(y_true, y_pred, len(groups))
    out = {}
    for g in GROUPS:
        vals = [a for a, gi in zip(pca, groups, strict=True) if gi == g and not np.isnan(a)]
        out[g] = float(np.mean(vals)) if vals else float("nan")
    return out


# --------------------------------------------------------------------------- hooks and features


class _StopForward(Exception):
    """Raised by a stopping hook once the wanted layer's output is captured."""


class Captured:
    """What `capture` yields: `.output` is the layer's output of the latest forward pass (None
    before one), `.outputs` all of them in order when `keep_all=True`."""

    def __init__(self, model: nn.Module, name: str, *, stop: bool = False, keep_all: bool = False):
        self.model, self.name, self.stop = model, name, stop
        self.output = None
        self.outputs: list = []
        self._keep_all = keep_all

    def run(self, x):
        """Forward `x` through the model (stopping right after the layer when `stop=True`, which
        saves the rest of the network) and return the layer's output."""
        self.output = None
        try:
            self.model(x)
        except _StopForward:
            pass
        if self.output is None:
            raise RuntimeError(f"layer {self.name!r} was not called in the model's forward pass")
        return self.output


def get_module(model: nn.Module, layer_name: str) -> nn.Module:
    """The submodule named `layer_name` (e.g. "layer4.2.conv3"); a ValueError naming near names
    (or, where none is near, the model's conv layers) otherwise."""
    if not isinstance(layer_name, str) or not layer_name:
        raise ValueError("layer must be a module name such as 'layer4.2.conv3', "
                         f"got {layer_name!r}")
    modules = dict(model.named_modules())
    if layer_name in modules:
        return modules[layer_name]
    names = [n for n in modules if n]
    near = difflib.get_close_matches(layer_name, names, n=5)
    if near:
        hint = f"Did you mean: {', '.join(near)}?"
    else:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        hint = f"Conv layers: {', '.join(convs[:20])}{' ...' if len(convs) > 20 else ''}."
    raise ValueError(f"model has no layer {layer_name!r}. {hint} Names come from "
                     "model.named_modules(), e.g. 'layer4.2.conv3'.")


@contextmanager
def capture(model: nn.Module, layer_name: str, *, detach: bool = False, keep_all: bool = False,
            stop: bool = False):
    """Capture the output of `model`'s layer `layer_name` during forward passes:

        with capture(model, "layer4") as cap:
            model(x)
        feats = cap.output

    A forward hook, removed when the block exits (also on an exception); the one place in hw2lib
    where such a hook is registered (feature visualization uses it too). The output keeps its graph
    unless `detach=True` (activation maximization and DeepDream need the gradient). With
    `stop=True`, `cap.run(x)` stops the forward pass right after the layer.
    """
    module = get_module(model, layer_name)
    cap = Captured(model, layer_name, stop=stop, keep_all=keep_all)

    def hook(_mod, _inp, output):
        out = output.detach() if detach and isinstance(output, torch.Tensor) else output
        cap.output = out
        if cap._keep_all:
            cap.outputs.append(out)
        if cap.stop:
            raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


def last_linear_name(model: nn.Module) -> str:
    """Name of the last `nn.Linear` in module order (for torchvision ResNets: "fc")."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("model has no nn.Linear layer, so there is no default penultimate "
                         "layer; pass layer='<module name>'")
    return names[-1]


def _pool_flatten(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        t = t.mean(dim=(2, 3))
    return t.flatten(1)


def extract_features(model: nn.Module, loader, *, layer: str | None = None,
                     device=None) -> tuple[np.ndarray, np.ndarray]:
    """Features of every sample of `loader` (float32 N×D) and its labels (int64 N).

    Default: the penultimate features, i.e. the input of the model's last `nn.Linear` (a forward
    pre-hook), flattened. `layer="layer3"`: that module's output, global-average-pooled when it is
    a feature map (N×C×H×W -> N×C), else flattened. Eval mode, no gradients; the hook is removed
    and the model's train/eval mode restored afterwards. `device=None` uses the model's device.
    """
    from hw2lib.engine import _model_device, resolve_device

    device = _model_device(model) if device is None else resolve_device(device)
    name = last_linear_name(model) if layer is None else layer
    module = get_module(model, name)
    store: dict[str, torch.Tensor] = {}
    if layer is None:
        handle = module.register_forward_pre_hook(
            lambda _m, inp: store.__setitem__("x", inp[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("x", out))
    feats, labels = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for xb, yb in loader:
                store.clear()
                model(xb.to(device, non_blocking=True))
                if "x" not in store:
                    raise RuntimeError(f"layer {name!r} was not called in the forward pass")
                feats.append(_pool_flatten(store["x"]).float().cpu())
                labels.append(torch.as_tensor(yb).cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return (torch.cat(feats).numpy().astype(np.float32, copy=False),
            torch.cat(labels).numpy().astype(np.int64, copy=False))


# --------------------------------------------------------------------------- export


def export_predictions(path, logits, targets, classes) -> Path:
    """Write one CSV row per sample: index, target, target_name, pred, pred_name, correct,
    confidence (softmax of the prediction) and prob_<class> for every class. Returns the path."""
    logits = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor)
                             else logits.detach().cpu()).float()
    t = _labels(targets, "targets")
    classes = list(classes)
    if logits.dim() != 2 or logits.shape[0] != len(t) or logits.shape[1] != len(classes):
        raise ValueError(f"logits must be N×C with N={len(t)} targets and C={len(classes)} "
                         f"classes, got shape {tuple(logits.shape)}")
    _check_range(t, len(classes), "targets")
    probs = torch.softmax(logits, dim=1).numpy()
    pred = probs.argmax(1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "target", "target_name", "pred", "pred_name", "correct",
                    "confidence", *[f"prob_{c}" for c in classes]])
        for i, (ti, pi) in enumerate(zip(t, pred, strict=True)):
            w.writerow([i, int(ti), classes[ti], int(pi), classes[pi], int(ti == pi),
                        f"{probs[i, pi]:.6f}", *[f"{v:.6f}" for v in probs[i]]])
    return path
