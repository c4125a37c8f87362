"""The 95 % intervals of a difference (hw2lib.study.stats): the issue's worked examples, the design each
comparison gets, and the verdict rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hw2lib.study import stats

A, B = [0.90, 0.91, 0.92], [0.89, 0.90, 0.90]


def test_welch_interval_reproduces_the_worked_example():
    diff, half, how = stats.seeds_interval(A, B, paired=False)
    assert diff == pytest.approx(0.013333, abs=1e-6)
    assert round(half, 4) == 0.0205
    assert "df 3.2" in how and "Welch" in how and "3/3" in how
    # the interval covers zero: not distinguishable (z = 1.96 gave ±0.0131 and "better")
    assert stats.verdict(diff, half) == "not distinguishable at this budget"
    assert stats.verdict(diff, 1.96 * math.sqrt(np.var(A, ddof=1) / 3 + np.var(B, ddof=1) / 3)) \
        == "better"


def test_paired_interval_reproduces_the_worked_example():
    diff, half, how = stats.seeds_interval(A, B, paired=True)
    assert diff == pytest.approx(0.013333, abs=1e-6)
    assert round(half, 4) == 0.0143
    assert how == "3 paired seeds, t(2) on per-seed differences"
    assert stats.verdict(diff, half) == "not distinguishable at this budget"


def test_t_quantiles():
    assert stats.t95(2) == pytest.approx(4.3027, abs=1e-4)
    assert stats.t95(1e6) == pytest.approx(1.96, abs=1e-3)


def test_seeds_interval_refuses_single_seeds_and_unpaired_lengths():
    with pytest.raises(ValueError, match="at least two seeds.*images_interval"):
        stats.seeds_interval([0.9], [0.8], paired=False)
    with pytest.raises(ValueError, match="same seed order"):
        stats.seeds_interval([0.9, 0.8], [0.8, 0.7, 0.6], paired=True)


def _flags(n, b, c):
    """Correctness of two models on n images: b images only a gets right, c only b."""
    a_ok = np.ones(n, bool)
    b_ok = np.ones(n, bool)
    a_ok[:80] = b_ok[:80] = False  # both wrong on 80: with b=40, c=20, accuracies 0.90 / 0.88
    b_ok[80:80 + b] = False
    a_ok[80 + b:80 + b + c] = False
    return a_ok, b_ok


def test_images_interval_reproduces_the_mcnemar_example():
    a_ok, b_ok = _flags(1000, 40, 20)
    diff, half, how = stats.images_interval(a_ok, b_ok)
    assert diff == pytest.approx(0.020)
    assert round(half, 4) == 0.0151
    assert how.startswith("one seed: evaluation noise only")
    assert stats.verdict(diff, half) == "better"
    # the unpaired binomial formula the study used before: ±0.0274, "not distinguishable"
    pa, pb = a_ok.mean(), b_ok.mean()
    unpaired = 1.96 * math.sqrt(pa * (1 - pa) / 1000 + pb * (1 - pb) / 1000)
    assert round(unpaired, 4) == 0.0274 and stats.verdict(diff, unpaired).startswith("not")


def test_images_interval_balanced_is_the_mean_of_per_class_differences():
    a_ok, b_ok = _flags(1000, 40, 20)
    classes = np.repeat([0, 1], 500)  # the differing images all fall in class 0
    diff, half, how = stats.images_interval(a_ok, b_ok, classes)
    assert diff == pytest.approx((0.04 - 0.0) / 2)  # class 0: (40 − 20)/500, class 1: 0
    d0 = 20 / 500
    assert half == pytest.approx(1.96 * math.sqrt(((60 / 500 - d0**2) / 500) / 4))
    assert "balanced over 2 classes" in how
    with pytest.raises(ValueError, match="same images"):
        stats.images_interval(a_ok, b_ok[:10])


def _row(name, key, seeds, values, n_train=None):
    return {"name": name, key: float(np.mean(values)), "seed_ids": seeds,
            f"{key}_values": values, "n_train": n_train}


def test_compare_pairs_on_the_common_seeds_and_says_so():
    a = _row("a", "test_acc", [0, 1, 2], A)
    b = _row("b", "test_acc", [0, 1, 2], B)
    c = stats.compare(a, b)
    assert round(c["half"], 4) == 0.0143 and "paired" in c["how"]
    # a mixed seed count: compared on the two seeds both ran, and the label says so
    short = _row("s", "test_acc", [1, 2], [0.90, 0.90])
    c = stats.compare(a, short)
    assert c["a_value"] == pytest.approx(0.915) and c["diff"] == pytest.approx(0.015)
    assert "on the 2 seeds both ran (3 vs 2 seeds)" in c["how"]
    # no common seed: independent arms, Welch
    other = _row("o", "test_acc", [5, 6, 7], B)
    assert "Welch" in stats.compare(a, other)["how"]


def test_compare_one_seed_uses_the_images_of_the_common_seed():
    a_ok, b_ok = _flags(1000, 40, 20)
    y = np.zeros(1000, int)
    runs = {("a", 0): a_ok, ("b", 0): b_ok}
    a = _row("a", "test_acc", [0, 1, 2], [a_ok.mean(), 0.5, 0.5])
    b = _row("b", "test_acc", [0], [b_ok.mean()])
    c = stats.compare(a, b, images=lambda row, seed: (runs[(row["name"], seed)], y))
    assert round(c["half"], 4) == 0.0151 and c["diff"] == pytest.approx(0.02)
    assert "one seed: evaluation noise only" in c["how"]
    assert "seed 0, the one seed both ran" in c["how"]
    # without saved predictions there is no interval, and the sentence says so
    text = stats.describe("x", a, b)
    assert "no per-image predictions saved: no interval" in text
    with pytest.raises(ValueError, match="same images"):
        stats.compare(a, b, images=lambda row, seed: (runs[(row["name"], seed)],
                                                      y if row["name"] == "a" else y[:999]))


def test_describe_verdicts_and_training_sizes():
    a = _row("a", "test_acc", [0, 1, 2], [0.90, 0.91, 0.92], n_train=16200)
    b = _row("b", "test_acc", [0, 1, 2], [0.80, 0.81, 0.81], n_train=2000)
    text = stats.describe("best vs hw2", a, b)
    assert text.startswith("best vs hw2: test acc 0.9100 vs 0.8067, +10.3 points ± ")
    assert "3 paired seeds" in text and ": better" in text
    assert text.endswith("[trained on different amounts of data: 16,200 vs 2,000 images]")
    assert ": worse" in stats.describe("x", b, a)
    same = stats.describe("x", _row("a", "test_acc", [0, 1], [0.9, 0.8]),
                          _row("b", "test_acc", [0, 1], [0.8, 0.9]))
    assert same.endswith("not distinguishable at this budget")
