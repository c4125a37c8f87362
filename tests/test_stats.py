"""The tests behind every verdict (hw2lib.study.stats): the issue's worked examples (Holm, exact
McNemar, paired t, Welch, zero spread), the design each comparison gets, and the words it allows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hw2lib.study import stats

A, B = [0.90, 0.91, 0.92], [0.89, 0.90, 0.90]


def test_holm_reproduces_the_worked_example():
    adj = stats.holm([0.01, 0.04, 0.03, 0.20])
    assert adj == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert [p < stats.ALPHA for p in adj] == [True, False, False, False]
    # NaN (no test) keeps its place and does not count in k
    adj = stats.holm([0.01, math.nan, 0.04])
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.04)


@pytest.mark.parametrize("b, c, p", [(5, 0, 0.0625), (9, 2, 0.0654), (40, 20, 0.0135)])
def test_exact_mcnemar_reproduces_the_worked_examples(b, c, p):
    assert stats.mcnemar_exact(b, c) == pytest.approx(p, abs=5e-5)
    assert stats.mcnemar_exact(c, b) == pytest.approx(p, abs=5e-5)


def test_exact_mcnemar_edges():
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(3, 3) == 1.0
    with pytest.raises(ValueError, match=">= 0"):
        stats.mcnemar_exact(-1, 2)


def test_paired_t_reproduces_the_worked_example():
    r = stats.seeds_test(A, B, paired=True)
    assert r["t"] == pytest.approx(4.0) and r["df"] == 2
    assert round(r["p"], 4) == 0.0572 and round(r["half"], 4) == 0.0143
    diff, half, how = stats.seeds_interval(A, B, paired=True)
    assert diff == pytest.approx(0.013333, abs=1e-6) and half == pytest.approx(r["half"])
    assert how == "3 paired seeds, t(2) on per-seed differences"


def test_welch_reproduces_the_worked_example():
    r = stats.seeds_test(A, B, paired=False)
    assert r["t"] == pytest.approx(2.0) and round(r["df"], 1) == 3.2
    assert round(r["p"], 3) == 0.134 and round(r["half"], 4) == 0.0205
    assert "Welch" in r["how"] and "3/3" in r["how"]


def test_zero_spread_gives_no_interval_and_says_why():
    diff, half, how = stats.seeds_interval([0.91, 0.92], [0.90, 0.91], paired=True)
    assert diff == pytest.approx(0.01) and math.isnan(half)
    assert "all equal" in how and "no verdict" in how
    r = stats.seeds_test([0.9, 0.9], [0.8, 0.8], paired=False)
    assert math.isnan(r["half"]) and math.isnan(r["p"]) and "same accuracy" in r["reason"]
    fam = stats.Family("f")
    fam.add("x", _row("a", [0, 1], [0.91, 0.92]), _row("b", [0, 1], [0.90, 0.91]))
    (res,) = fam.results()
    assert res["word"] is None and fam.k == 0
    assert "no interval and no verdict" in res["text"] and "better" not in res["text"]


def test_seeds_need_two_per_arm():
    with pytest.raises(ValueError, match="at least two seeds.*images_test"):
        stats.seeds_interval([0.9], [0.8], paired=False)
    with pytest.raises(ValueError, match="same seed order"):
        stats.seeds_interval([0.9, 0.8], [0.8, 0.7, 0.6], paired=True)


def _flags(n, b, c):
    """Correctness of two models on n images: b images only a gets right, c only b."""
    a_ok = np.ones(n, bool)
    b_ok = np.ones(n, bool)
    a_ok[:80] = b_ok[:80] = False  # both wrong on 80
    b_ok[80:80 + b] = False
    a_ok[80 + b:80 + b + c] = False
    return a_ok, b_ok


@pytest.mark.parametrize("b, c", [(5, 0), (9, 2), (40, 20), (3, 0), (30, 12), (0, 0)])
def test_the_images_interval_claims_no_more_than_the_exact_test(b, c):
    r = stats.images_test(*_flags(5400, b, c))
    assert r["diff"] == pytest.approx((b - c) / 5400)
    assert r["p"] == pytest.approx(stats.mcnemar_exact(b, c))
    excludes_zero = r["lo"] > 0 or r["hi"] < 0
    assert excludes_zero == (r["p"] < 0.05)
    assert r["lo"] <= r["diff"] <= r["hi"]


def test_no_discordant_image_is_not_a_sharp_zero():
    """Two models that agree on all 200 images: the difference on these images is 0, but the
    interval says how far apart they could be on other images — the discordance rate's exact
    upper bound (1 − 0.025^(1/200) ≈ 1.83 %), on both sides."""
    r = stats.images_test(*_flags(200, 0, 0))
    bound = 1 - 0.025 ** (1 / 200)
    assert r["diff"] == 0 and r["p"] == 1
    assert r["lo"] == pytest.approx(-bound) and r["hi"] == pytest.approx(bound)
    # and a few discordant images widen the interval beyond the conditional one
    r = stats.images_test(*_flags(200, 3, 0))
    assert r["hi"] > 3 / 200 and r["lo"] < 0


def test_five_against_none_is_not_a_difference_any_more():
    """5 vs 0 discordant of 5,400: the normal interval said "better"; the exact test does not."""
    a_ok, b_ok = _flags(5400, 5, 0)
    wald = 1.96 * math.sqrt((5 / 5400 - (5 / 5400) ** 2) / 5400)
    assert 5 / 5400 > wald  # what the old interval claimed
    fam = stats.Family("f")
    y = np.zeros(5400, int)
    fam.add("x", _row("a", [0], [a_ok.mean()]), _row("b", [0], [b_ok.mean()]), "test_acc",
            lambda row, seed: ((a_ok if row["name"] == "a" else b_ok), y))
    (res,) = fam.results()
    assert res["word"] == stats.MODELS_SAME and res["p"] == pytest.approx(0.0625)


def test_balanced_images_test_weights_classes_and_its_interval_follows_the_test():
    a_ok, b_ok = _flags(1000, 40, 20)
    classes = np.repeat([0, 1], 500)  # the differing images all fall in class 0
    r = stats.images_test(a_ok, b_ok, classes)
    assert r["diff"] == pytest.approx((0.04 - 0.0) / 2)  # class 0: (40 − 20)/500, class 1: 0
    d0 = 20 / 500
    assert r["half"] >= 1.96 * math.sqrt(((60 / 500 - d0**2) / 500) / 4) - 1e-12
    assert "balanced over 2 classes" in r["how"] and 0.0 < r["p"] < 0.05
    # with equal weights the flips give McNemar's answer
    flat = stats.images_test(a_ok, b_ok, np.zeros(1000, int))
    assert flat["p"] == pytest.approx(stats.mcnemar_exact(40, 20), abs=0.005)
    # few discordant images: neither the interval nor the test claims a difference
    few = stats.images_test(*_flags(1000, 4, 0), classes)
    assert few["p"] > 0.05 and few["lo"] <= 0
    with pytest.raises(ValueError, match="same images"):
        stats.images_test(a_ok, b_ok[:10])


def _row(name, seeds, values, key="test_acc", n_train=None):
    return {"name": name, key: float(np.mean(values)), "seed_ids": seeds,
            f"{key}_values": values, "n_train": n_train, "run_ids": f"{name}-ids"}


def test_compare_picks_the_design_from_the_seeds():
    a, b = _row("a", [0, 1, 2], A), _row("b", [0, 1, 2], B)
    c = stats.compare(a, b)
    assert c["level"] == "recipes" and round(c["half"], 4) == 0.0143 and "paired" in c["how"]
    short = _row("s", [1, 2], [0.90, 0.91])
    c = stats.compare(a, short)
    assert c["a_value"] == pytest.approx(0.91)  # the table's mean, not the shared seeds'
    assert "on the 2 seeds both ran (3 vs 2 seeds)" in c["how"]
    assert "Welch" in stats.compare(a, _row("o", [5, 6, 7], B))["how"]


def test_a_one_seed_arm_is_about_two_models_and_prints_the_table_means():
    a_ok, b_ok = _flags(1000, 40, 20)
    y = np.zeros(1000, int)
    runs = {("a", 0): a_ok, ("b", 0): b_ok}
    a = _row("a", [0, 1, 2], [a_ok.mean(), 0.5, 0.5])
    b = _row("b", [0], [b_ok.mean()])
    fam = stats.Family("claims")
    c = fam.add("a vs b", a, b, "test_acc", lambda row, seed: (runs[(row["name"], seed)], y))
    assert c["level"] == "models" and c["diff"] == pytest.approx(0.02)
    (res,) = fam.results()
    assert res["word"] == stats.MODELS_DIFFER
    text = res["text"]
    assert f"{a['test_acc']:.4f} vs {b['test_acc']:.4f} (means of 3 vs 1 seeds)" in text
    assert "the two trained models of seed 0: 0.9000 vs 0.8800" in text
    assert "better" not in text and "worse" not in text and "no verdict on the recipes" in text
    # without saved predictions: no interval, and the sentence says so
    fam2 = stats.Family("f")
    fam2.add("x", a, b)
    assert "no per-image predictions saved: no interval" in fam2.lines()[0]
    # scored on other images (a headline on the whole test split, a run on a subset): said
    other = stats.compare(a, b, images=lambda row, seed: (
        runs[(row["name"], seed)] if row["name"] == "a" else runs[("b", seed)][:999],
        y if row["name"] == "a" else y[:999]))
    assert np.isnan(other["half"]) and "not scored on the same test images (1,000 vs 999)" in \
        other["reason"]


def test_holm_decides_the_words_of_a_family():
    # two clear recipe differences, a null one and a weak one: alone the weak one reads "better"
    rows = {n: _row(n, [0, 1, 2], v) for n, v in {
        "base": [0.80, 0.81, 0.82], "big": [0.90, 0.91, 0.925], "weak": [0.812, 0.824, 0.842],
        "same": [0.801, 0.809, 0.821]}.items()}
    alone = stats.Family("alone")
    alone.add("weak vs base", rows["weak"], rows["base"])
    assert alone.results()[0]["word"] == stats.BETTER
    fam = stats.Family("claims")
    fam.add("big vs base", rows["big"], rows["base"])
    fam.add("weak vs base", rows["weak"], rows["base"])
    fam.add("big vs weak", rows["big"], rows["weak"])
    fam.add("same vs base", rows["same"], rows["base"])
    res = {r["label"]: r for r in fam.results()}
    assert fam.k == 4 and all(r["k"] == 4 for r in res.values())
    assert res["weak vs base"]["p_adj"] > res["weak vs base"]["p"]
    assert res["weak vs base"]["word"] == stats.NOT_DISTINGUISHABLE
    assert res["big vs base"]["word"] == stats.BETTER
    assert res["same vs base"]["word"] == stats.NOT_DISTINGUISHABLE
    assert "Holm p" in res["big vs base"]["text"] and "(k = 4)" in res["big vs base"]["text"]
    assert fam.heading().startswith("claims — a family of k = 4 tested comparisons: Holm")


def test_a_run_is_never_compared_with_itself():
    """Two names with one identity (e.g. a lever that changes nothing at this profile's
    settings) are the same training: no test, no word, and the line says why."""
    r = _row("a", [0, 1], [0.9, 0.8])
    fam = stats.Family("f")
    fam.add("a vs a", r, {**r, "name": "b"})
    (res,) = fam.results()
    assert fam.k == 0 and res["word"] is None and "never compared with itself" in res["text"]


def test_two_decimals_of_points():
    fam = stats.Family("f")
    fam.add("x", _row("a", [0, 1, 2], [0.9012, 0.9021, 0.9033]),
            _row("b", [0, 1, 2], [0.9001, 0.9010, 0.9018]))
    text = fam.lines()[0]
    assert "+0.12 points ± " in text and "better" in text


def test_a_group_metric_is_compared_as_a_mean_of_its_classes():
    # C's few-shot line: the metric is the mean of the group's per-class accuracies, so the
    # images test weighs classes, not images, even where the key is not called bal_acc
    y = np.array([0] * 90 + [1] * 10)
    a_ok = np.ones(100, bool)
    b_ok = np.concatenate([np.ones(90, bool), np.zeros(10, bool)])
    a, b = _row("a", [0], [a_ok.mean()], key="test_few"), _row("b", [0], [b_ok.mean()], key="test_few")
    runs = {"a": a_ok, "b": b_ok}
    images = lambda row, seed: (runs[row["name"]], y)  # noqa: E731
    plain = stats.compare(a, b, "test_few", images)
    weighed = stats.compare(a, b, "test_few", images, balanced=True)
    assert "balanced over" not in plain["how"] and plain["diff"] == pytest.approx(0.10)
    assert "balanced over 2 classes" in weighed["how"] and weighed["diff"] == pytest.approx(0.50)
    one = stats.images_test(a_ok[90:], b_ok[90:], y[90:])
    assert "balanced over 1 class," in one["how"]


def test_a_family_heading_counts_only_the_tested_comparisons():
    a, b = _row("a", [0, 1, 2], A), _row("b", [0, 1, 2], B)
    fam = stats.Family("tracks")
    fam.add("no predictions", _row("x", [0], [0.9]), _row("y", [0], [0.8]))  # no test possible
    assert fam.k == 0
    assert fam.heading() == ("tracks — 1 comparison, none with a test here (each line says "
                             "why): no word")
    fam.add("seeds", a, b)
    assert fam.heading().startswith("tracks — a family of k = 1 tested comparison (of 2; the "
                                    "other without a test, each line says why): Holm-adjusted")
