"""hw2lib.nets.metrics against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from hw2lib.nets import metrics as M

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

