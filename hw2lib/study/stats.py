"""How sure a difference of two accuracies is, computed the textbook way for its design, and the
word it allows.

Designs (each gives a difference, its 95 % interval and a two-sided p-value from the same test):

- independent seeds — Student's t with Welch's (Welch–Satterthwaite) degrees of freedom;
- the same seeds in both arms — t(n−1) on the per-seed differences;
- one trained model each, scored on the same images — the exact McNemar test (the binomial on the
  discordant images), with the Clopper–Pearson interval of its discordant share as the interval of
  the difference, so the interval excludes zero exactly when the exact test rejects; for balanced
  accuracy (images weighted by 1/(K·n_class)) a seeded sign-flip randomization test on the
  discordant images, the interval widened to the test's critical value.

Words. "better", "worse" and "not distinguishable" are words about *recipes*: they need at least two
seeds in each arm. With one seed in an arm the line is about the two trained models ("these two
trained models differ on these images" or "… do not differ beyond evaluation noise …"): it says
nothing of seed-to-seed variation and gives no verdict on the recipes. A notebook declares its
*families* of related comparisons; within a family Holm-adjusted p-values decide the words
(`Family`). A difference with no spread between seeds gives no interval and no word, with the
reason. Differences are written in accuracy points with two decimals.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import stdtr, stdtrit
from scipy.stats import beta, binom

ALPHA = 0.05
Z95 = 1.96
RANDOMIZATION_DRAWS = 20_000
BETTER, WORSE, NOT_DISTINGUISHABLE = "better", "worse", "not distinguishable"
MODELS_DIFFER = "these two trained models differ on these images"
MODELS_SAME = "these two trained models do not differ beyond evaluation noise on these images"
ONE_SEED = "one seed per arm: evaluation noise only, no verdict on the recipes"


def t95(df: float) -> float:
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom."""
    return float(stdtrit(df, 0.975))


def t_pvalue(t: float, df: float) -> float:
    """Two-sided p of Student's t statistic `t` with `df` degrees of freedom."""
    return float(2 * stdtr(df, -abs(t)))


def seeds_test(a_accs, b_accs, paired: bool) -> dict:
    """mean a − mean b from per-seed accuracies, with its 95 % interval (`half`), t, df and the
    two-sided p. `paired`: a_accs[i] and b_accs[i] ran the same seed on the same split (t(n−1) on
    the differences); otherwise the arms are independent (Welch's t). Where the seeds show no
    spread at all the test is undefined: `half` and `p` are NaN and `reason` says why."""
    a, b = np.asarray(a_accs, dtype=float), np.asarray(b_accs, dtype=float)
    if paired:
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"paired seeds need one accuracy per seed in each arm, in the same "
                             f"seed order; got {a.shape} and {b.shape}")
        if len(a) < 2:
            raise ValueError(f"an interval from seeds needs at least two seeds per arm, got "
                             f"{len(a)}; with one seed each use images_test")
        d = a - b
        n = len(d)
        se, df = float(d.std(ddof=1)) / math.sqrt(n), float(n - 1)
        how = f"{n} paired seeds, t({n - 1}) on per-seed differences"
        diff = float(d.mean())
        spread = "the per-seed differences are all equal"
    else:
        if min(len(a), len(b)) < 2:
            raise ValueError(f"an interval from seeds needs at least two seeds per arm, got "
                             f"{len(a)} and {len(b)}; with one seed each use images_test")
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se2 = va + vb
        df = (se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se2 > 0 else math.nan)
        se, diff = math.sqrt(se2), float(a.mean() - b.mean())
        how = f"n = {len(a)}/{len(b)} independent seeds, Welch t (df {df:.1f})"
        spread = "both arms gave the same accuracy on every seed"
    if not se > 0:
        return {"diff": diff, "half": math.nan, "p": math.nan, "t": math.nan, "df": df,
                "how": how, "reason": f"{spread}: a t interval needs some spread, so no interval "
                                      "and no verdict (more seeds, or a larger evaluation set)"}
    t = diff / se
    half = t95(df) * se
    return {"diff": diff, "half": half, "lo": diff - half, "hi": diff + half, "p": t_pvalue(t, df),
            "t": t, "df": df, "how": how, "reason": None}


def seeds_interval(a_accs, b_accs, paired: bool) -> tuple[float, float, str]:
    """(mean a − mean b, half-width of its 95 % interval, how it was estimated) — `seeds_test`
    without its p-value; the half-width is NaN where the seeds show no spread (the reason is
    appended to `how`)."""
    r = seeds_test(a_accs, b_accs, paired)
    how = r["how"] if r["reason"] is None else f"{r['how']}; {r['reason']}"
    return r["diff"], r["half"], how


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p of b images right only in arm a and c right only in arm b: twice
    the smaller binomial tail of Bin(b + c, ½), at most 1 (1 when no image differs)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    n = b + c
    return 1.0 if n == 0 else float(min(1.0, 2 * binom.cdf(min(b, c), n, 0.5)))


def _clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def images_test(a_correct, b_correct, classes=None, *, seed: int = 0,
                draws: int = RANDOMIZATION_DRAWS) -> dict:
    """Two models scored on the same images (`a_correct`, `b_correct`: one boolean per image, same
    order): accuracy a − accuracy b, its 95 % interval (lo, hi), the two-sided p and the counts.

    b images right only in a, c only in b, n images: diff = (b − c)/n; p is the exact McNemar test;
    the interval is the Clopper–Pearson interval of b/(b + c) mapped onto the difference at the
    ends of the Clopper–Pearson interval of the discordance rate (b + c)/n (it excludes zero
    exactly when the exact test rejects, even with a handful of discordant images, and is not a
    sharp zero when none differ).
    With `classes` (each image's class) the difference is of balanced accuracy — each image weighs
    1/(K·n_class) — and p comes from `draws` seeded sign flips of the discordant images; the
    interval is the normal one (the per-class variances summed over K²), widened to the flips'
    95 % critical value so that it claims no more than the test."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"images_test needs one correctness flag per image for the same images "
                         f"in both arms; got shapes {a.shape} and {b.shape}")
    n = len(a)
    only_a, only_b = a & ~b, ~a & b
    nb, nc = int(only_a.sum()), int(only_b.sum())
    if classes is None:
        diff = (nb - nc) / n
        p = mcnemar_exact(nb, nc)
        # b/(b + c) by Clopper–Pearson, the discordance rate (b + c)/n by Clopper–Pearson too:
        # the difference is rate × (2·share − 1), taken at its extremes over both intervals, so
        # that a handful of discordant images (or none) does not read as a sharp zero
        pl, ph = _clopper_pearson(nb, nb + nc) if nb + nc else (0.0, 1.0)
        rl, rh = _clopper_pearson(nb + nc, n)
        lo = (2 * pl - 1) * (rh if pl < 0.5 else rl)
        hi = (2 * ph - 1) * (rh if ph > 0.5 else rl)
        how = (f"exact McNemar on {nb} vs {nc} discordant of {n:,} images, Clopper–Pearson "
               "interval")
        return {"diff": diff, "lo": lo, "hi": hi, "half": (hi - lo) / 2, "p": p, "only_a": nb,
                "only_b": nc, "n": n, "how": how, "interval": "exact"}
    cls = np.asarray(classes)
    if cls.shape != a.shape:
        raise ValueError(f"classes must give one class per image ({a.shape}), got {cls.shape}")
    ks, inv, sizes = np.unique(cls, return_inverse=True, return_counts=True)
    w = 1.0 / (len(ks) * sizes[inv])  # each image's weight in the balanced accuracy
    sign = only_a.astype(float) - only_b.astype(float)
    diff = float((w * sign).sum())
    var = 0.0
    for k in range(len(ks)):
        m = inv == k
        dk = sign[m].mean()
        var += max(float((sign[m] != 0).mean() - dk**2), 0.0) / m.sum()
    half = Z95 * math.sqrt(var / len(ks) ** 2)
    wd = w[sign != 0]
    if len(wd) == 0:
        p, crit = 1.0, 0.0
    else:
        rng = np.random.default_rng(seed)
        null = np.abs((rng.integers(0, 2, (draws, len(wd))) * 2 - 1) @ wd)
        p = float((1 + (null >= abs(diff) - 1e-15).sum()) / (draws + 1))
        crit = float(np.quantile(null, 1 - ALPHA))
    half = max(half, crit)
    how = (f"balanced over {len(ks)} class{'es' if len(ks) != 1 else ''}, {nb} vs {nc} discordant of {n:,} images, "
           f"sign-flip randomization test ({draws:,} draws)")
    return {"diff": diff, "lo": diff - half, "hi": diff + half, "half": half, "p": p,
            "only_a": nb, "only_b": nc, "n": n, "how": how, "interval": "symmetric"}


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest p times
    (k − i + 1), made non-decreasing along the sorted order, at most 1. NaN stays NaN and does not
    count in k."""
    p = [float(v) for v in pvalues]
    order = sorted((i for i, v in enumerate(p) if not math.isnan(v)), key=lambda i: p[i])
    k, out, running = len(order), [math.nan] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p[i]))
        out[i] = running
    return out


# Per-image correctness of one run of a summary row: images(row, seed) → (correct, targets), or
# None when that run saved no per-image predictions for the metric.
ImagesFn = Callable[[dict, int], "tuple[np.ndarray, np.ndarray] | None"]


def _seeds(row: dict, key: str) -> dict:
    """{seed: value} of a summary row (a row without per-seed values: one value, seed None)."""
    values = row.get(f"{key}_values")
    if values is None:
        return {row.get("seed", None): float(row[key])}
    return dict(zip(row["seed_ids"], map(float, values), strict=True))


def compare(a: dict, b: dict, key: str = "test_acc", images: ImagesFn | None = None, *,
            balanced: bool | None = None) -> dict:
    """The difference of `key` between two summary rows (`seed_ids` and `<key>_values`, from
    `experiment.summarize`), tested as its design allows. a_value and b_value are the rows' means
    (what their tables show); `level` is "recipes" where both arms ran at least two seeds (paired
    t on the seeds both ran when at least two, else Welch), "models" where an arm has one seed
    (the two trained models of one seed, scored on the same images: `images`; `balanced`: the
    metric is a mean of per-class accuracies — default for a `bal_acc` key). Keys: a_value,
    b_value, seeds (a, b), diff, lo, hi, half, p, how, level, reason (why there is no interval,
    else None)."""
    sa, sb = _seeds(a, key), _seeds(b, key)
    base = dict(a_value=float(np.mean(list(sa.values()))),
                b_value=float(np.mean(list(sb.values()))), seeds=(len(sa), len(sb)))
    common = [s for s in sa if s in sb and s is not None]
    if min(len(sa), len(sb)) >= 2:
        if len(common) >= 2:
            r = seeds_test([sa[s] for s in common], [sb[s] for s in common], paired=True)
            if len(common) != len(sa) or len(common) != len(sb):
                r["how"] += f", on the {len(common)} seeds both ran ({len(sa)} vs {len(sb)} seeds)"
        else:
            r = seeds_test(list(sa.values()), list(sb.values()), paired=False)
        return {**base, **r, "level": "recipes"}
    seed_a = common[0] if common else next(iter(sa))
    seed_b = common[0] if common else next(iter(sb))
    where = (f"seed {seed_a}" if seed_a == seed_b else f"seed {seed_a} vs seed {seed_b}")
    out = {**base, "diff": sa[seed_a] - sb[seed_b], "half": math.nan, "p": math.nan,
           "level": "models", "models": (sa[seed_a], sb[seed_b], where),
           "how": f"{ONE_SEED}; {where}", "reason": "no per-image predictions saved: no interval"}
    got = (images(a, seed_a), images(b, seed_b)) if images is not None else (None, None)
    if got[0] is None or got[1] is None:
        return out
    (ca, ya), (cb, yb) = got
    if len(ya) != len(yb) or not np.array_equal(ya, yb):
        # e.g. a headline tested on the whole test split against a run tested on a subset
        return {**out, "reason": f"not scored on the same test images ({len(ya):,} vs "
                                 f"{len(yb):,}): no paired test, no interval"}
    balanced = "bal_acc" in key if balanced is None else balanced
    r = images_test(ca, cb, ya if balanced else None)
    return {**out, **r, "how": f"{ONE_SEED}; {where}; {r['how']}", "reason": None}


def word(c: dict, p_adj: float) -> str | None:
    """The word a comparison allows at its family-adjusted p (None: no interval)."""
    if math.isnan(c["half"]) or math.isnan(p_adj):
        return None
    clear = p_adj < ALPHA and (c["lo"] > 0 or c["hi"] < 0)
    if c["level"] == "models":
        return MODELS_DIFFER if clear else MODELS_SAME
    return (BETTER if c["diff"] > 0 else WORSE) if clear else NOT_DISTINGUISHABLE


def points(v: float) -> str:
    return f"{100 * v:+.2f}"


def interval_text(c: dict) -> str:
    """"± 0.80 (95 %)" (symmetric) or "(95 % −0.10 to +2.50)" (the exact one), in points."""
    if c.get("interval") == "exact":
        return f"(95 % {points(c['lo'])} to {points(c['hi'])})"
    return f"± {100 * c['half']:.2f} (95 %)"


def _pvalue(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


class Family:
    """A declared family of related comparisons: Holm-adjusted p-values decide their words.

    `add(label, a, b, key, images, claim=...)` compares two summary rows (see `compare`);
    `results()` adjusts within the family and returns one record per comparison (JSON-ready);
    `lines()` the sentences, the first naming the family and its size k."""

    def __init__(self, name: str, note: str = ""):
        self.name, self.note, self.items = name, note, []
        self._results: list[dict] | None = None

    def add(self, label: str, a: dict, b: dict, key: str = "test_acc",
            images: ImagesFn | None = None, *, claim: str = "", extra: str = "",
            balanced: bool | None = None) -> dict:
        if a is b or (a.get("run_ids") and a.get("run_ids") == b.get("run_ids")
                      and a.get("_images_key") == b.get("_images_key")):
            # the same training on both sides (equal identities): nothing to test
            c = {"a_value": float(a[key]), "b_value": float(b[key]), "diff": 0.0,
                 "seeds": (a.get("seeds", 1), b.get("seeds", 1)), "half": math.nan,
                 "p": math.nan, "level": "same", "how": "",
                 "reason": f"the same run(s) on both sides (run ids {a.get('run_ids')}): a run "
                           "is never compared with itself"}
        else:
            c = compare(a, b, key, images, balanced=balanced)
        na, nb = a.get("n_train"), b.get("n_train")
        if na and nb and na != nb:
            extra += f" [trained on different amounts of data: {na:,} vs {nb:,} images]"
        self._results = None
        self.items.append({"label": label, "key": key, "claim": claim, "extra": extra,
                           "a": a.get("name"), "b": b.get("name"),
                           "a_run_ids": a.get("run_ids"), "b_run_ids": b.get("run_ids"), **c})
        return c

    @property
    def k(self) -> int:
        return sum(not math.isnan(c["p"]) for c in self.items)

    def results(self) -> list[dict]:
        if self._results is None:
            adj = holm([c["p"] for c in self.items])
            self._results = [{**c, "family": self.name, "k": self.k, "p_adj": pa,
                              "word": word(c, pa), "text": self._sentence(c, pa)}
                             for c, pa in zip(self.items, adj, strict=True)]
        return self._results

    def _sentence(self, c: dict, p_adj: float) -> str:
        what = c["key"].replace("_", " ").replace("bal acc", "balanced acc")
        na, nb = c["seeds"]
        text = f"{c['label']}: {what} {c['a_value']:.4f} vs {c['b_value']:.4f}"
        if c["level"] == "recipes":
            text += f" (means of {na} vs {nb} seeds)"
        elif max(na, nb) == 1 or c["level"] == "same":
            text += " (one seed each)" if max(na, nb) == 1 else f" ({na} vs {nb} seeds)"
        else:
            ma, mb, where = c["models"]
            text += (f" (means of {na} vs {nb} seeds); the two trained models of {where}: "
                     f"{ma:.4f} vs {mb:.4f}")
        text += f", {points(c['diff'])} points"
        if c["reason"] is not None:
            text += f" ({'; '.join(x for x in (c['how'], c['reason']) if x)})"
        else:
            text += (f" {interval_text(c)}, {c['how']}; p {_pvalue(c['p'])}, Holm p "
                     f"{_pvalue(p_adj)} (k = {self.k}): {word(c, p_adj)}")
        text += c["extra"]
        return text + (f" — {c['claim']}" if c["claim"] else "")

    def lines(self) -> list[str]:
        return [r["text"] for r in self.results()]

    def heading(self) -> str:
        n, k = len(self.items), self.k
        note = f" ({self.note})" if self.note else ""
        if k == 0:
            return (f"{self.name} — {n} comparison{'s' * (n != 1)}, none with a test here (each "
                    f"line says why): no word{note}")
        untested = (f" (of {n}; the other{'s' * (n - k != 1)} without a test, each line says why)"
                    if k < n else "")
        return (f"{self.name} — a family of k = {k} tested comparison{'s' * (k != 1)}{untested}: "
                f"Holm-adjusted p < {ALPHA:g} decides each word{note}")
