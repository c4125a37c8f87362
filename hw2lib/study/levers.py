"""Task B's best-recipe levers and the numbers every B table compares: test accuracy at the
val-chosen checkpoint (`KEY`), per-image correctness of a summary row's runs for paired intervals
(`images_of`), the levers read from the best recipe's own runs (TTA, EMA), and the lever table."""

from __future__ import annotations

import pandas as pd

from hw2lib.study import stats
from hw2lib.train.experiment import per_image_correct


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


def same_run_levers(best: dict) -> list[tuple[str, dict, dict, str]]:
    """The levers read from the best recipe's own runs, as (label, whole recipe, without the
    lever, metric key): the TTA lever (the same weights and images scored with and without it)
    and the EMA lever (the raw weights of the same runs, at their own val-chosen checkpoint)."""
    out = []
    if best.get("test_acc_no_tta") is not None:
        out.append(("best recipe vs without 8-view test-time averaging (same weights, same "
                    "images)", best, variant(best, "_no_tta"), KEY))
    if best.get("test_acc_raw") is not None:
        out.append(("best recipe vs without EMA of weights (the raw weights of the same runs)",
                    best, variant(best, "_raw"), KEY))
    return out


def lever_table(rows: list[dict], levers: dict) -> pd.DataFrame | None:
    """The best recipe and each leave-one-out variant: test accuracy at the val-chosen checkpoint
    (mean ± std over seeds), the val maximum that chose it, and the test difference to the whole
    recipe with its 95 % interval (`stats.compare`). The TTA and EMA rows are the same runs scored
    without TTA / with their raw weights (no extra training); the "without the 8 symmetries" lever
    is shown scored with 8-view TTA (views it never trained on) and, both sides, without."""
    by = {r["name"]: r for r in rows}
    if "best" not in by:
        return None
    best = by["best"]
    out = [{"recipe": "best recipe (all levers)", TEST_LABEL: cell(best),
            VAL_LABEL: cell(best, "val_acc"), "Δ test vs best (points)": "—"}]
    for label, whole, without, key in same_run_levers(best):
        out.append(lever_row(label.replace("best recipe vs ", ""), without, whole, key))
    for name, (what, _) in levers.items():
        if name not in by:
            continue
        r = by[name]
        suffix = " (scored with 8-view TTA, like the rest)" if name == "best_no_d4" else ""
        out.append(lever_row(f"without {what}{suffix}", r, best))
        if name == "best_no_d4" and r.get("test_acc_no_tta") is not None \
                and best.get("test_acc_no_tta") is not None:
            out.append(lever_row(f"without {what} — both scored without TTA",
                                  variant(r, "_no_tta"), variant(best, "_no_tta")))
    return pd.DataFrame(out).set_index("recipe")


def lever_view(rows: list[dict], levers: dict):
    """`lever_table` (styled: its interval column is shown whole), and a note when the whole
    recipe is not among the runs."""
    table = lever_table(rows, levers)
    if table is None:
        return None, "The best recipe is not in this profile's list."
    return table.style, ""


def lever_row(label: str, r: dict, best: dict, key: str = KEY) -> dict:
    c = stats.compare(r, best, key, images_of(key))
    interval = ("no interval" if c["half"] != c["half"]
                else f"± {100 * c['half']:.2f}, {stats.verdict(c['diff'], c['half'])}")
    return {"recipe": label, TEST_LABEL: cell(r, key), VAL_LABEL: cell(r, "val_acc"),
            "Δ test vs best (points)": f"{100 * c['diff']:+.2f} {interval} ({c['how']})"}
