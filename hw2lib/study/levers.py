"""Task B's best-recipe levers and the numbers every B table compares: test accuracy at the
val-chosen checkpoint (`KEY`), per-image correctness of a summary row's runs for paired tests
(`images_of`), the levers read from the best recipe's own runs (TTA, EMA), and the lever family
and table (each lever left out of the whole recipe, Holm-adjusted within the family)."""

from __future__ import annotations

import math

import pandas as pd

from hw2lib.study import stats
from hw2lib.train.experiment import per_image_correct

LEVER_FAMILY = "Track 2: what each lever is worth"


def cell(r: dict, key: str = "test_acc") -> str:
    m, s = r[key], r.get(key + "_std", 0.0)
    return f"{m:.4f} ± {s:.4f} (n={r['seeds']})" if r["seeds"] > 1 else f"{m:.4f} (one seed)"


# The compared number: test accuracy at the checkpoint validation chose (nothing is chosen on
# test). The val accuracy is the maximum over epochs of the numbers that chose that checkpoint:
# shown only as the selection metric, never compared.
KEY = "test_acc"
TEST_LABEL = "test acc (val-chosen checkpoint)"
VAL_LABEL = "val acc (selection metric: max over epochs)"


def images_of(key: str = KEY):
    """`stats.ImagesFn` for a metric key of B's summary rows: per-image correctness of one seed's
    run from its saved predictions (`test_acc_no_tta` → the plain forward of a TTA run,
    `test_acc_raw` → the raw weights of an EMA run; a row's `_images_key` overrides `key`)."""
    def images(row: dict, seed: int):
        k = row.get("_images_key", key)
        split = k.split("_", 1)[0]
        suffix = next((v for v in ("_raw_no_tta", "_raw", "_no_tta") if k.endswith(v)), "")
        dirs = row.get("run_folders") or []
        if seed not in row.get("seed_ids", []) or len(dirs) != len(row["seed_ids"]):
            return None
        return per_image_correct(dirs[row["seed_ids"].index(seed)], split, suffix)

    return images


def as_metric(row: dict, key: str, src: str) -> dict:
    """`row` with the metric `key` (value, std, per-seed values) taken from metric `src`."""
    return {**row, key: row[src], f"{key}_std": row.get(f"{src}_std", 0.0),
            f"{key}_values": row.get(f"{src}_values")}


def variant(row: dict, suffix: str) -> dict:
    """`row` scored another way (`_no_tta`: without TTA, `_raw`: the raw weights of an EMA run):
    its test and val accuracies (and per-image predictions) replaced by that variant's."""
    out = as_metric(row, "test_acc", f"test_acc{suffix}")
    if row.get(f"val_acc{suffix}") is not None:
        out = as_metric(out, "val_acc", f"val_acc{suffix}")
    return {**out, "_images_key": f"test_acc{suffix}"}


def same_run_levers(best: dict) -> list[tuple[str, dict]]:
    """The levers read from the best recipe's own runs, as (label, the runs scored without the
    lever): the TTA lever (the same weights and images scored without it) and the EMA lever (the
    raw weights of the same runs, at their own val-chosen checkpoint)."""
    out = []
    if best.get("test_acc_no_tta") is not None:
        out.append(("without 8-view test-time averaging (same weights, same images)",
                    variant(best, "_no_tta")))
    if best.get("test_acc_raw") is not None:
        out.append(("without EMA of weights (the raw weights of the same runs)",
                    variant(best, "_raw")))
    return out


def lever_family(rows: list[dict], levers: dict) -> tuple[stats.Family | None, list]:
    """The family of lever comparisons — each lever left out, against the whole recipe (`best`),
    on test accuracy at the val-chosen checkpoint — and the table's rows in order, as (label,
    the row without the lever). None without the whole recipe. The "without the 8 symmetries"
    lever is compared scored with 8-view TTA (views it never trained on) and, both sides,
    without."""
    by = {r["name"]: r for r in rows}
    if "best" not in by:
        return None, []
    best = by["best"]
    fam = stats.Family(LEVER_FAMILY, "each lever left out of the whole recipe, at the levers' "
                                     "budget")
    shown = []
    for label, without in same_run_levers(best):
        fam.add(label, without, best, KEY, _pair_images(without, best))
        shown.append((label, without))
    for name, (what, _) in levers.items():
        if name not in by:
            continue
        r = by[name]
        suffix = " (scored with 8-view TTA, like the rest)" if name == "best_no_d4" else ""
        label = f"without {what}{suffix}"
        if r["stem"] != best["stem"] and name == "best_torchvision_stem" and \
                best["stem"] != "small":  # a profile's best runs torchvision's stem: tried back
            label = (f"with the 64-px stem ({r['stem']}) instead of this profile's "
                     f"{best['stem']} stem")
        fam.add(label, r, best, KEY, images_of(KEY))
        shown.append((label, r))
        if name == "best_no_d4" and r.get("test_acc_no_tta") is not None \
                and best.get("test_acc_no_tta") is not None:
            label = f"without {what} — both scored without TTA"
            a, b = variant(r, "_no_tta"), variant(best, "_no_tta")
            fam.add(label, a, b, KEY, _pair_images(a, b))
            shown.append((label, a))
    return fam, shown


def _pair_images(a: dict, b: dict):
    """Per-image correctness where each row is scored its own way (its `_images_key`)."""
    fa, fb = images_of(a.get("_images_key", KEY)), images_of(b.get("_images_key", KEY))
    return lambda row, seed: (fa if row is a else fb)(row, seed)


def lever_table(rows: list[dict], levers: dict) -> pd.DataFrame | None:
    """The best recipe and each leave-one-out variant: test accuracy at the val-chosen checkpoint
    (mean ± std over seeds), the val maximum that chose it, the test difference to the whole
    recipe with its 95 % interval and test, the Holm-adjusted p within the lever family, and the
    word it allows (see `stats`). The TTA and EMA rows are the same runs scored without TTA /
    with their raw weights (no extra training)."""
    fam, shown = lever_family(rows, levers)
    if fam is None:
        return None
    best = next(r for r in rows if r["name"] == "best")
    delta, adj = "Δ test vs best (points)", f"Holm p (k = {fam.k})"
    out = [{"recipe": "best recipe (all levers)", TEST_LABEL: cell(best),
            VAL_LABEL: cell(best, "val_acc"), delta: "—", adj: "—", "word": "—"}]
    for (label, r), res in zip(shown, fam.results(), strict=True):
        interval = (res["reason"] if res["reason"] is not None
                    else f"{stats.interval_text(res)}, {res['how']}")
        out.append({"recipe": label, TEST_LABEL: cell(r), VAL_LABEL: cell(r, "val_acc"),
                    delta: f"{stats.points(res['diff'])} {interval}",
                    adj: "—" if math.isnan(res["p_adj"]) else f"{res['p_adj']:.3f}",
                    "word": res["word"] or "no verdict"})
    return pd.DataFrame(out).set_index("recipe")


def lever_view(rows: list[dict], levers: dict):
    """`lever_table` (styled: its interval column is shown whole), and a note when the whole
    recipe is not among the runs."""
    table = lever_table(rows, levers)
    if table is None:
        return None, "The best recipe is not in this profile's list."
    return table.style, ""
