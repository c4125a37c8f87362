"""hw2lib.metrics against hand-computed cases; hooks are always removed."""

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hw2lib import metrics as M

# 3 classes; class 0: 4 samples (3 right), class 1: 2 samples (1 right), class 2: 1 sample (0 right)
Y_TRUE = [0, 0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 0, 1, 1, 2, 0]


def test_accuracy_hand_computed():
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 7)
    assert M.accuracy(torch.tensor(Y_TRUE), torch.tensor(Y_PRED)) == pytest.approx(4 / 7)
    assert math.isnan(M.accuracy([], []))
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy([0, 1], [0])


def test_balanced_accuracy_is_mean_recall():
    # recalls 3/4, 1/2, 0/1
    assert M.balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    # a predicted class absent from y_true does not count as a class
    assert M.balanced_accuracy([0, 0, 1], [0, 2, 1]) == pytest.approx((0.5 + 1.0) / 2)


def test_per_class_accuracy_nan_for_absent_class():
    pca = M.per_class_accuracy(Y_TRUE, Y_PRED, num_classes=4)
    np.testing.assert_allclose(pca[:3], [0.75, 0.5, 0.0])
    assert np.isnan(pca[3])


def test_confusion_matrix_counts_and_normalized():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, 4)
    expected = np.array([[3, 1, 0, 0],
                         [0, 1, 1, 0],
                         [1, 0, 0, 0],
                         [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    cmn = M.confusion_matrix(Y_TRUE, Y_PRED, 4, normalize="true")
    np.testing.assert_allclose(cmn[0], [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(cmn[3], [0, 0, 0, 0])  # no samples: zeros, not NaN
    with pytest.raises(ValueError, match="normalize"):
        M.confusion_matrix(Y_TRUE, Y_PRED, 4, normalize="rows")
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([0, 5], [0, 1], 4)


def test_shot_group_boundaries():
    counts = [101, 100, 20, 19, 5000, 0]
    assert M.shot_groups(counts) == ["many", "medium", "medium", "few", "many", "few"]
    assert M.shot_groups([50, 10], many=40, few=11) == ["many", "few"]


def test_group_accuracy_mean_of_class_accuracies_and_empty_group():
    # classes 0 (many), 1 (medium), 2 (many); no few-shot class
    counts = [500, 50, 200]
    res = M.group_accuracy(Y_TRUE, Y_PRED, counts)
    assert res["many"] == pytest.approx((0.75 + 0.0) / 2)
    assert res["medium"] == pytest.approx(0.5)
    assert set(res) == {"many", "medium", "few"}
    assert math.isnan(res["few"])


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x))))


def _loader(n=10, bs=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 5, 5, generator=g)
    y = torch.arange(n) % 3
    return DataLoader(TensorDataset(x, y), batch_size=bs), x, y


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_capture_gives_output_and_removes_hook():
    model = Tiny()
    x = torch.randn(2, 3, 5, 5)
    with M.capture(model, "conv") as cap:
        assert model.conv._forward_hooks  # installed while inside
        model(x)
    assert cap.output.shape == (2, 4, 5, 5)
    torch.testing.assert_close(cap.output, model.conv(x))
    assert cap.output.requires_grad  # keeps the graph (needed for activation maximization)
    assert _no_hooks(model)


def test_capture_removes_hook_on_exception():
    model = Tiny()
    with pytest.raises(RuntimeError, match="boom"):
        with M.capture(model, "head.1"):
            model(torch.randn(1, 3, 5, 5))
            raise RuntimeError("boom")
    assert not model.head[1]._forward_hooks
    assert _no_hooks(model)


def test_capture_unknown_layer_names_near_matches():
    with pytest.raises(ValueError, match="no layer 'conv1'.*Did you mean: conv"):
        with M.capture(Tiny(), "conv1"):
            pass


def test_capture_unknown_layer_without_near_names_lists_conv_layers():
    with pytest.raises(ValueError, match=r"no layer 'zzz'.*Conv layers: conv\."):
        M.get_module(Tiny(), "zzz")
    with pytest.raises(ValueError, match="module name"):
        M.get_module(Tiny(), "")


def test_capture_stop_runs_only_up_to_the_layer():
    model = Tiny()
    calls = []
    model.head.register_forward_hook(lambda *_: calls.append("head"))
    x = torch.randn(2, 3, 5, 5)
    with M.capture(model, "conv", stop=True) as cap:
        out = cap.run(x)
    torch.testing.assert_close(out, model.conv(x))
    assert calls == []  # the forward pass stopped before the head
    model.head._forward_hooks.clear()
    assert _no_hooks(model)


def test_capture_run_names_a_layer_the_forward_pass_never_calls():
    model = Tiny()
    model.unused = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="'unused' was not called"):
        with M.capture(model, "unused") as cap:
            cap.run(torch.randn(1, 3, 5, 5))
    assert _no_hooks(model)


def test_extract_features_default_is_input_of_last_linear():
    model = Tiny().train()
    loader, x, y = _loader()
    feats, labels = M.extract_features(model, loader)
    assert feats.dtype == np.float32 and labels.dtype == np.int64
    assert feats.shape == (10, 6)  # input of head.3 = output of the ReLU after head.1
    with torch.no_grad():
        expected = model.head[2](model.head[1](model.head[0](model.pool(torch.relu(
            model.conv(x))))))
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y.numpy())
    assert model.training  # mode restored
    assert _no_hooks(model)
    assert M.last_linear_name(model) == "head.3"


def test_extract_features_named_layer_is_pooled():
    model = Tiny()
    loader, x, _ = _loader()
    feats, _ = M.extract_features(model, loader, layer="conv")
    with torch.no_grad():
        expected = model.conv(x).mean(dim=(2, 3))
    assert feats.shape == (10, 4)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert _no_hooks(model)


def test_extract_features_removes_hook_on_error():
    model = Tiny()
    bad = [(torch.randn(2, 3, 5, 5), torch.zeros(2)), (torch.randn(2, 7, 5, 5), torch.zeros(2))]
    with pytest.raises(RuntimeError):
        M.extract_features(model, bad)
    assert _no_hooks(model)


def test_export_predictions(tmp_path):
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    path = M.export_predictions(tmp_path / "sub" / "pred.csv", logits, [0, 1], ["a", "b", "c"])
    rows = list(csv.DictReader(open(path)))
    assert [r["pred_name"] for r in rows] == ["a", "c"]
    assert [r["correct"] for r in rows] == ["1", "0"]
    assert [r["target_name"] for r in rows] == ["a", "b"]
    p = np.exp([2.0, 0, 0]) / np.exp([2.0, 0, 0]).sum()
    assert float(rows[0]["prob_a"]) == pytest.approx(p[0], abs=1e-6)
    assert sum(float(rows[1][f"prob_{c}"]) for c in "abc") == pytest.approx(1, abs=1e-5)
    with pytest.raises(ValueError, match="N×C"):
        M.export_predictions(tmp_path / "x.csv", logits, [0], ["a", "b", "c"])
