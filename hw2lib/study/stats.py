"""How sure a difference of two accuracies is, computed the textbook way for its design, and the
verdict it allows:

- `seeds_interval(a, b, paired=False)`: independent seeds — Student's t with Welch's
  (Welch–Satterthwaite) degrees of freedom;
- `seeds_interval(a, b, paired=True)`: both arms ran the same seeds on the same split — t(n−1) on
  the per-seed differences;
- `images_interval(a_correct, b_correct)`: one model each, scored on the same images — the paired
  (McNemar-type) interval from per-image correctness. It holds evaluation noise only: nothing of
  seed-to-seed variation, and its label says so.

`compare` picks the right one for two summary rows (the seeds both ran, else the images), and
`describe` writes the sentence. A difference is "not distinguishable at this budget" when its
95 % interval covers zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import stdtrit

Z95 = 1.96
ONE_SEED = "one seed: evaluation noise only"
NOT_DISTINGUISHABLE = "not distinguishable at this budget"


def t95(df: float) -> float:
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom."""
    return float(stdtrit(df, 0.975))


def seeds_interval(a_accs, b_accs, paired: bool) -> tuple[float, float, str]:
    """(mean a − mean b, half-width of its 95 % interval, how it was estimated) from per-seed
    accuracies. `paired`: a_accs[i] and b_accs[i] ran the same seed on the same split (t(n−1) on
    the differences); otherwise the arms are independent (Welch's t)."""
    a, b = np.asarray(a_accs, dtype=float), np.asarray(b_accs, dtype=float)
    if paired:
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"paired seeds need one accuracy per seed in each arm, in the same "
                             f"seed order; got {a.shape} and {b.shape}")
        if len(a) < 2:
            raise ValueError(f"an interval from seeds needs at least two seeds per arm, got "
                             f"{len(a)}; with one seed each use images_interval")
        d = a - b
        n = len(d)
        half = t95(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
        return float(d.mean()), half, f"{n} paired seeds, t({n - 1}) on per-seed differences"
    if min(len(a), len(b)) < 2:
        raise ValueError(f"an interval from seeds needs at least two seeds per arm, got "
                         f"{len(a)} and {len(b)}; with one seed each use images_interval")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    df = (se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se2 > 0
          else float(len(a) + len(b) - 2))
    half = t95(df) * math.sqrt(se2)
    return (float(a.mean() - b.mean()), half,
            f"n = {len(a)}/{len(b)} independent seeds, Welch t (df {df:.1f})")


def images_interval(a_correct, b_correct, classes=None) -> tuple[float, float, str]:
    """(accuracy a − accuracy b, half-width of its 95 % interval, label) of two models scored on
    the same images (`a_correct`, `b_correct`: one boolean per image, same order). With b = a right
    and b wrong, c = a wrong and b right over n images: diff = (b − c)/n and half-width
    1.96·sqrt((b + c)/n − diff²)/sqrt(n). With `classes` (each image's class) the difference is
    of balanced accuracy: the mean of the per-class differences, its variance the sum of theirs
    over K²."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"images_interval needs one correctness flag per image for the same "
                         f"images in both arms; got shapes {a.shape} and {b.shape}")

    def paired(x, y):
        n = len(x)
        d = ((x & ~y).sum() - (~x & y).sum()) / n
        return float(d), max(float(((x != y).sum() / n - d**2) / n), 0.0)

    if classes is None:
        diff, var = paired(a, b)
        how = f"{ONE_SEED} (paired on {len(a):,} images)"
    else:
        cls = np.asarray(classes)
        if cls.shape != a.shape:
            raise ValueError(f"classes must give one class per image ({a.shape}), got "
                             f"{cls.shape}")
        parts = [paired(a[cls == k], b[cls == k]) for k in np.unique(cls)]
        diff = float(np.mean([d for d, _ in parts]))
        var = sum(v for _, v in parts) / len(parts) ** 2
        how = f"{ONE_SEED} (paired on {len(a):,} images, balanced over {len(parts)} classes)"
    return diff, Z95 * math.sqrt(var), how


def verdict(diff: float, half: float) -> str | None:
    """"better" / "worse", or "not distinguishable at this budget" when the interval covers
    zero; None without an interval."""
    if math.isnan(half):
        return None
    return NOT_DISTINGUISHABLE if abs(diff) <= half else "better" if diff > 0 else "worse"


# Per-image correctness of one run of a summary row: images(row, seed) → (correct, targets), or
# None when that run saved no per-image predictions for the metric.
ImagesFn = Callable[[dict, int], "tuple[np.ndarray, np.ndarray] | None"]


def _seeds(row: dict, key: str) -> dict[int, float]:
    """{seed: value} of a summary row (a row without per-seed values: one value, seed None)."""
    values = row.get(f"{key}_values")
    if values is None:
        return {row.get("seed", None): float(row[key])}
    return dict(zip(row["seed_ids"], map(float, values), strict=True))


def compare(a: dict, b: dict, key: str = "test_acc", images: ImagesFn | None = None) -> dict:
    """The difference of `key` between two summary rows (`seed_ids` and `<key>_values`, from
    `experiment.summarize`) with the interval its design allows: paired seeds on the seeds both
    ran (when at least two; a mixed seed count says so), independent seeds (Welch) when they share
    none, else the paired images interval of one run each (`images`). Returns a_value, b_value
    (the means compared), diff, half (NaN: no interval) and how."""
    sa, sb = _seeds(a, key), _seeds(b, key)
    common = [s for s in sa if s in sb and s is not None]
    mixed = len(sa) != len(common) or len(sb) != len(common)
    if len(common) >= 2:
        av, bv = [sa[s] for s in common], [sb[s] for s in common]
        diff, half, how = seeds_interval(av, bv, paired=True)
        if mixed:
            how += f", on the {len(common)} seeds both ran ({len(sa)} vs {len(sb)} seeds)"
        return dict(a_value=float(np.mean(av)), b_value=float(np.mean(bv)), diff=diff,
                    half=half, how=how)
    if not common and min(len(sa), len(sb)) >= 2:
        diff, half, how = seeds_interval(list(sa.values()), list(sb.values()), paired=False)
        return dict(a_value=float(np.mean(list(sa.values()))),
                    b_value=float(np.mean(list(sb.values()))), diff=diff, half=half, how=how)
    seed_a = common[0] if common else next(iter(sa))
    seed_b = common[0] if common else next(iter(sb))
    out = dict(a_value=sa[seed_a], b_value=sb[seed_b], diff=sa[seed_a] - sb[seed_b],
               half=math.nan, how=f"{ONE_SEED}; no per-image predictions saved: no interval")
    got = (images(a, seed_a), images(b, seed_b)) if images is not None else (None, None)
    if got[0] is None or got[1] is None:
        return out
    (ca, ya), (cb, yb) = got
    if len(ya) != len(yb) or not np.array_equal(ya, yb):
        raise ValueError(f"{a.get('name')} and {b.get('name')} were not scored on the same "
                         f"images ({len(ya)} vs {len(yb)}): a paired interval needs the same "
                         f"evaluation rows")
    diff, half, how = images_interval(ca, cb, ya if "bal_acc" in key else None)
    if seed_a is not None and seed_b is not None:
        if seed_a != seed_b:
            how += f"; seed {seed_a} vs seed {seed_b}"
        elif mixed:
            how += f"; seed {seed_a}, the one seed both ran"
    return dict(a_value=sa[seed_a], b_value=sb[seed_b], diff=diff, half=half, how=how)


def describe(label: str, a: dict, b: dict, key: str = "test_acc",
             images: ImagesFn | None = None) -> str:
    """One sentence: both values of `key`, the difference in points with its 95 % interval (see
    `compare`), a verdict that says no more than the interval allows, and both training-set
    sizes when they differ."""
    c = compare(a, b, key, images)
    what = key.replace("_", " ").replace("bal acc", "balanced acc")
    text = f"{label}: {what} {c['a_value']:.4f} vs {c['b_value']:.4f}, {100 * c['diff']:+.1f} points"
    na, nb = a.get("n_train"), b.get("n_train")
    sizes = (f" [trained on different amounts of data: {na:,} vs {nb:,} images]"
             if na and nb and na != nb else "")
    v = verdict(c["diff"], c["half"])
    if v is None:
        return text + f" ({c['how']}){sizes}"
    return text + f" ± {100 * c['half']:.1f} (95 %, {c['how']}): {v}{sizes}"
