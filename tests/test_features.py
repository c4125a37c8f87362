"""hw2lib.nets.features: features extracted at a layer (values against a hand-run forward pass), t-SNE
quality on separated clusters, and the leave-one-out kNN score on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nets import Tiny
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hw2lib.nets import features as F
from hw2lib.nets.nn_utils import last_linear


def _loader(n=10, bs=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 5, 5, generator=g)
    y = torch.arange(n) % 3
    return DataLoader(TensorDataset(x, y), batch_size=bs), x, y


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_extract_features_default_is_input_of_last_linear():
    model = Tiny().train()
    loader, x, y = _loader()
    feats, labels = F.extract_features(model, loader)
    assert feats.dtype == np.float32 and labels.dtype == np.int64
    assert feats.shape == (10, 6)  # input of head.3 = output of the ReLU after head.1
    with torch.no_grad():
        expected = model.head[2](model.head[1](model.head[0](model.pool(torch.relu(
            model.conv(x))))))
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y.numpy())
    assert model.training  # mode restored
    assert _no_hooks(model)
    assert last_linear(model)[0] == "head.3"  # the default layer: the last Linear


def test_extract_features_named_layer_is_pooled():
    model = Tiny()
    loader, x, _ = _loader()
    feats, _ = F.extract_features(model, loader, layer="conv")
    with torch.no_grad():
        expected = model.conv(x).mean(dim=(2, 3))
    assert feats.shape == (10, 4)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert _no_hooks(model)


def test_extract_features_removes_hook_on_error():
    model = Tiny()
    bad = [(torch.randn(2, 3, 5, 5), torch.zeros(2)), (torch.randn(2, 7, 5, 5), torch.zeros(2))]
    with pytest.raises(RuntimeError):
        F.extract_features(model, bad)
    assert _no_hooks(model)


def test_extract_features_device_stop_and_submodule_modes():
    model = Tiny().train()
    model.head[0].eval()  # a mixed-mode model: each submodule's own flag comes back
    calls = []
    model.head.register_forward_hook(lambda *_: calls.append("head"))
    loader, x, _ = _loader(n=5, bs=2)
    feats, labels = F.extract_features(model, loader, layer="conv", device="cpu")
    assert feats.shape == (5, 4) and labels.tolist() == [0, 1, 2, 0, 1]
    assert calls == []  # the forward pass stopped after the captured layer
    assert model.training and not model.head[0].training and model.head[1].training
    model.head._forward_hooks.clear()
    assert _no_hooks(model)
    with pytest.raises(ValueError, match="model first"):
        F.extract_features(model, loader, device="meta")
    empty_f, empty_y = F.extract_features(model, [])
    assert empty_f.shape == (0, 0) and empty_y.shape == (0,)
    with pytest.raises(ValueError, match="no nn.Linear"):
        F.extract_features(nn.Sequential(nn.Conv2d(3, 2, 1)), loader)
    assert _no_hooks(model)


# ------------------------------------------------------------------------------------------------
# t-SNE


def _clusters(n_per=60, dim=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    x = np.concatenate([c + rng.normal(0, 1, (n_per, dim)) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_tsne_separates_clusters_and_is_seeded():
    x, y = _clusters()
    emb = F.tsne_embed(x, seed=0, perplexity=20)
    assert isinstance(emb, np.ndarray) and emb.shape == (180, 2) and np.isfinite(emb).all()
    assert F.knn_accuracy(emb, y, k=10) > 0.95
    shuffled = np.random.default_rng(1).permutation(y)
    assert F.knn_accuracy(emb, shuffled, k=10) < 0.6  # random labels: about chance (1/3)
    np.testing.assert_allclose(F.tsne_embed(x, seed=0, perplexity=20), emb)


def test_knn_accuracy_leave_one_out_exact():
    emb = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [10, 0], [10.1, 0], [10.2, 0]])
    assert F.knn_accuracy(emb, [0, 0, 0, 1, 1, 1], k=2) == 1.0
    # the odd one out in each group of 4 is outvoted by its 3 neighbours; the self never votes
    four = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [0.3, 0], [10, 0], [10.1, 0], [10.2, 0],
                     [10.3, 0]])
    assert F.knn_accuracy(four, [0, 0, 0, 1, 1, 1, 1, 0], k=3) == pytest.approx(6 / 8)
    # a tied vote goes to the smallest label (points 0 and 1 have one neighbour of each label)
    line = [[0.0], [1.0], [-1.0]]
    assert F.knn_accuracy(line, [0, 0, 5], k=2) == pytest.approx(2 / 3)
    assert F.knn_accuracy(line, [5, 5, 0], k=2) == 0.0
    dup = np.zeros((4, 2))  # duplicates: the point itself is still left out
    assert F.knn_accuracy(dup, ["a", "a", "a", "b"], k=3) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="k=6"):
        F.knn_accuracy(emb, [0] * 6, k=6)
