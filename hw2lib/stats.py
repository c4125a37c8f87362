"""How sure a difference of two accuracies is: from seeds (standard error of the difference of
means) or, with one seed each, from the number of evaluated images (a binomial 95 % interval).
A finding says "not distinguishable at this budget" when its 95 % interval covers zero."""

from __future__ import annotations

import math

Z95 = 1.96


def diff_interval(a: dict, b: dict, key: str = "val_acc") -> tuple[float, float, str]:
    """(difference a − b, half-width of its 95 % interval, how it was estimated), in accuracy
    fractions. `a`/`b` are summary rows: `key`, `key_std`, `seeds` and `<split>_n` (images)."""
    diff = a[key] - b[key]
    if a.get("seeds", 1) > 1 and b.get("seeds", 1) > 1:
        se = math.sqrt(a[key + "_std"] ** 2 / a["seeds"] + b[key + "_std"] ** 2 / b["seeds"])
        return diff, Z95 * se, f"n = {a['seeds']}/{b['seeds']} seeds"
    split = key.split("_", 1)[0]
    na, nb = a.get(f"{split}_n"), b.get(f"{split}_n")
    if not na or not nb:
        return diff, math.nan, "no sample size recorded"
    se = math.sqrt(a[key] * (1 - a[key]) / na + b[key] * (1 - b[key]) / nb)
    return diff, Z95 * se, f"one seed; interval from {na:,} {split} images"


def describe(label: str, a: dict, b: dict, key: str = "val_acc") -> str:
    """One sentence: both accuracies, the difference in points with its 95 % interval, and a
    verdict that says no more than the interval allows."""
    diff, half, how = diff_interval(a, b, key)
    text = f"{label}: {a[key]:.4f} vs {b[key]:.4f}, {100 * diff:+.1f} points"
    if math.isnan(half):
        return text + f" ({how}: no interval)"
    verdict = ("not distinguishable at this budget" if abs(diff) <= half
               else "better" if diff > 0 else "worse")
    return text + f" ± {100 * half:.1f} (95 %, {how}): {verdict}"
