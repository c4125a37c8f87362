"""A model's learned features: extract them at a layer for a whole loader (`extract_features`),
embed them in 2-D with t-SNE (`tsne_embed`, openTSNE) and score how well the embedding keeps the
classes apart (`knn_accuracy`). The scatter plot of an embedding is `hw2lib.study.plots.plot_embedding`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hw2lib.nets.hooks import capture
from hw2lib.nets.nn_utils import check_same_device, eval_mode, last_linear

__all__ = ["extract_features", "knn_accuracy", "tsne_embed"]


def _pool_flatten(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        t = t.mean(dim=(2, 3))
    return t.flatten(1)


def extract_features(model: nn.Module, loader, *, layer: str | None = None,
                     device=None) -> tuple[np.ndarray, np.ndarray]:
    """Features of every sample of `loader` (float32 N×D) and its labels (int64 N).

    Default: the penultimate features, i.e. the input of the model's last `nn.Linear`, flattened.
    `layer="layer3"`: that module's output, global-average-pooled when it is a feature map
    (N×C×H×W -> N×C), else flattened. The forward pass stops at the captured tensor. Eval mode, no
    gradients; the hook is removed and every submodule's train/eval mode restored afterwards.
    `device=None` uses the model's device; a given `device` must be the model's (it is not moved).
    """
    device = check_same_device(model, device)
    name = last_linear(model)[0] if layer is None else layer
    feats, labels = [], []
    with eval_mode(model), torch.inference_mode(), \
            capture(model, name, what="input" if layer is None else "output", stop=True) as cap:
        for xb, yb in loader:
            out = cap.run(xb.to(device, non_blocking=True))
            feats.append(_pool_flatten(out).float().cpu())
            labels.append(torch.as_tensor(yb).cpu())
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return (torch.cat(feats).numpy().astype(np.float32, copy=False),
            torch.cat(labels).numpy().astype(np.int64, copy=False))


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


def knn_predictions(embedding, labels, k: int = 10) -> np.ndarray:
    """Leave-one-out kNN labels in the embedding: each point gets the majority label of its k
    nearest *other* points (ties go to the smallest label)."""
    from sklearn.neighbors import NearestNeighbors

    emb = np.asarray(embedding, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if emb.ndim != 2 or len(emb) != len(y):
        raise ValueError(f"knn_accuracy: embedding {emb.shape} and labels {y.shape} must be N×d "
                         f"and N")
    if not 1 <= k < len(y):
        raise ValueError(f"knn_accuracy: k={k} must be between 1 and N-1={len(y) - 1}")
    values, y_idx = np.unique(y, return_inverse=True)
    # kneighbors() without X leaves each point out of its own neighbour list (duplicates included).
    nn_index = NearestNeighbors(n_neighbors=k).fit(emb)
    idx = nn_index.kneighbors(return_distance=False)
    votes = np.zeros((len(y), y_idx.max() + 1), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(y)), k), y_idx[idx].ravel()), 1)
    return values[votes.argmax(1)]


def knn_accuracy(embedding, labels, k: int = 10) -> float:
    """Leave-one-out kNN accuracy of `labels` in the embedding (see `knn_predictions`)."""
    return float(np.mean(knn_predictions(embedding, labels, k) == np.asarray(labels).ravel()))
