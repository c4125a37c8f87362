"""Track 1's accuracy jumps at the LR steps of B's MultiStep runs (the report: "each jump of the
learning rate raises acc by a few points"), as one family of comparisons: each jump with its
interval from the validation images, Holm-adjusted p deciding each word."""

from __future__ import annotations

import math

import pandas as pd

from hw2lib.study import stats
from hw2lib.train.recipes import B_EXPERIMENTS

JUMPS = "Track 1: accuracy jumps at the LR steps"


def step_jumps(records: list[dict], window: int = 3) -> list[dict]:
    """The validation accuracy around each drop of the LR in the MultiStep runs: per run and
    step, the mean val accuracy of the `window` epochs after the drop minus that of the `window`
    epochs before it, with a 95 % interval and two-sided p from the number of validation images —
    evaluation noise only (one run), and conservative: the two windows are scored on the same
    images, which the unpaired interval does not use (the mean of w epochs is taken as no better
    than one epoch's estimate). The jumps form one family: Holm-adjusted p decides each word."""
    out = []
    for r in records:
        hist = r["history"]
        cfg = r["config"]
        if cfg["schedule"] != "multistep" or len(hist) < 2:
            continue
        n = r.get("val_n") or 0
        for i in range(1, len(hist)):
            if not hist[i]["lr"] < hist[i - 1]["lr"] * 0.999:
                continue
            before = [h["val_acc"] for h in hist[max(0, i - window):i]]
            after = [h["val_acc"] for h in hist[i:i + window]]
            a, b = sum(after) / len(after), sum(before) / len(before)
            se = math.sqrt(a * (1 - a) / n + b * (1 - b) / n) if n else math.nan
            p = (math.erfc(abs(a - b) / se / math.sqrt(2)) if se > 0
                 else (1.0 if a == b else 0.0)) if n else math.nan
            out.append({"run": cfg["name"], "seed": cfg["seed"], "epoch": hist[i]["epoch"],
                        "lr": f"{hist[i - 1]['lr']:.2g} → {hist[i]['lr']:.2g}",
                        "val acc before": round(b, 4), "val acc after": round(a, 4),
                        "jump (points)": round(100 * (a - b), 2),
                        "± 95 % (points)": round(100 * stats.Z95 * se, 2), "p": p})
    adj = stats.holm([j["p"] for j in out])
    k = sum(not math.isnan(j["p"]) for j in out)
    for j, pa in zip(out, adj, strict=True):
        clear = pa < stats.ALPHA and abs(j["jump (points)"]) > j["± 95 % (points)"]
        j.update({"Holm p": pa, "k": k, "change": (
            "no interval" if math.isnan(pa) else
            ("rose" if j["jump (points)"] > 0 else "fell") if clear
            else "no change beyond evaluation noise")})
    return out


def step_jumps_table(records: list[dict]):
    """`step_jumps` as a table, and a note (the family, and a caveat for runs shorter than the
    protocol); (None, why) when there is none."""
    jumps = step_jumps(records)
    if jumps:
        note = (f"{JUMPS}: a family of k = {jumps[0]['k']} jumps, Holm-adjusted p decides each "
                "word; one run each, so evaluation noise only.")
        short = sorted({f"{r['config']['name']} ({r['config']['epochs']} of "
                        f"{B_EXPERIMENTS[r['config']['name']]['epochs']} epochs)" for r in records
                        if r["config"]["schedule"] == "multistep"
                        and r["config"]["name"] in B_EXPERIMENTS
                        and r["config"]["epochs"] < B_EXPERIMENTS[r["config"]["name"]]["epochs"]})
        if short:
            note += (f" Runs shorter than the protocol ({', '.join(short)}): their steps fall in "
                     "the first epochs, so these windows also hold ordinary early progress — a "
                     "jump here is not the report's effect of an LR step.")
        table = pd.DataFrame(jumps).drop(columns="k").set_index(["run", "seed", "epoch"])
        return table.style.format({"p": "{:.3g}", "Holm p": "{:.3g}", "jump (points)": "{:+.2f}",
                                   "± 95 % (points)": "{:.2f}", "val acc before": "{:.4f}",
                                   "val acc after": "{:.4f}"}), note
    if any(r["config"]["schedule"] == "multistep" for r in records):
        return None, "No LR step fell within the epochs these MultiStep runs trained."
    return None, "No MultiStep run in this profile's list."
