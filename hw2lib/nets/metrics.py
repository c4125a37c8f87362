"""Classification metrics: accuracy, balanced and per-class accuracy, confusion matrix, and
many/medium/few-shot groups of a long-tailed training set with their accuracies.

Labels may be NumPy arrays, torch tensors or lists. Accuracies are fractions in [0, 1]; a class or
group without samples has accuracy NaN (not 0: nothing was measured).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn import metrics as skm

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
