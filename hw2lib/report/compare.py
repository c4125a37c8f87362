"""`hw2 compare A B`: what a reproduction changed. Two report folders (two machines, profiles or
commits) side by side: every headline number and every finding of both, with the difference,
whether the run identities are equal, and two flags — "flipped" (a difference read in one
direction in A and the other in B: better ↔ worse, or two models that differ each way) and
"changed" (a difference in one, none in the other: a verdict ↔ not distinguishable) — and
"other arms" where a finding of the same name compares other runs or methods on each side (C's
method chosen on validation). It writes `compare.html` and, with `--json`, the same rows as
JSON.

It reads only each folder's `runs/<notebook>/results.json` (`headline` and `findings`, written by
`study.notebook.write_results`); a notebook missing on one side shows as such."""

from __future__ import annotations

import argparse
import html
import math
from pathlib import Path

from hw2lib.core import io
from hw2lib.core.constants import NOTEBOOKS
from hw2lib.report.index import read_results


def load(folder) -> dict:
    """{notebook: results.json} of a report folder (a notebook without one is absent)."""
    folder = Path(folder)
    if not (folder / "runs").is_dir():
        raise ValueError(f"{folder} is not an hw2 report folder (it has no runs/ folder): give "
                         "the folder `hw2 report` wrote, e.g. reports/quick")
    out = {}
    for nb in NOTEBOOKS:
        res, bad = read_results(folder, nb)
        if bad:
            raise ValueError(bad)
        if res:
            out[nb] = res
    return out


def direction(word: str | None, diff: float | None) -> int | None:
    """+1 / −1 for a word of `study.stats` that says a difference (its sign from the difference
    where the word has none: two models that differ), 0 for a word that says none, None without
    a word. (stats is imported here: the CLI's start stays free of numpy and scipy.)"""
    from hw2lib.study import stats

    different = {stats.BETTER: +1, stats.WORSE: -1, stats.MODELS_DIFFER: 0}
    if word in different:
        return different[word] or (1 if (diff or 0) > 0 else -1)
    return 0 if word in (stats.NOT_DISTINGUISHABLE, stats.MODELS_SAME) else None


def flag(word_a, diff_a, word_b, diff_b) -> str:
    """"flipped", "changed" or "" (see the module)."""
    da, db = direction(word_a, diff_a), direction(word_b, diff_b)
    if da is None or db is None:
        return "" if da == db else "changed"
    if da and db and da != db:
        return "flipped"
    return "changed" if bool(da) != bool(db) else ""


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def compare(a: dict, b: dict) -> list[dict]:
    """One row per headline number and per finding of either side, keyed by notebook and name
    (a finding by its family and label)."""
    rows = []
    for nb in NOTEBOOKS:
        ra, rb = a.get(nb, {}), b.get(nb, {})
        if not ra and not rb:
            continue
        ha = {h["name"]: h for h in ra.get("headline", [])}
        hb = {h["name"]: h for h in rb.get("headline", [])}
        for name in dict.fromkeys([*ha, *hb]):
            x, y = ha.get(name), hb.get(name)
            va, vb = _num((x or {}).get("value")), _num((y or {}).get("value"))
            rows.append({
                "notebook": nb, "kind": "headline", "name": name, "a": va, "b": vb,
                "delta": None if va is None or vb is None else vb - va,
                "a_ids": (x or {}).get("run_id"), "b_ids": (y or {}).get("run_id"),
                "same_runs": x is not None and y is not None and x.get("run_id") == y.get("run_id"),
                "a_word": None, "b_word": None,
                "flag": "" if x is not None and y is not None else
                        ("only in A" if y is None else "only in B")})
        fa = {(f["family"], f["label"]): f for f in ra.get("findings", [])}
        fb = {(f["family"], f["label"]): f for f in rb.get("findings", [])}
        for key in dict.fromkeys([*fa, *fb]):
            x, y = fa.get(key), fb.get(key)
            da, db = _num((x or {}).get("diff")), _num((y or {}).get("diff"))
            ids_a = (x or {}).get("a_run_ids"), (x or {}).get("b_run_ids")
            ids_b = (y or {}).get("a_run_ids"), (y or {}).get("b_run_ids")
            arms_a = x and (x.get("a"), x.get("b"))
            arms_b = y and (y.get("a"), y.get("b"))
            rows.append({
                "notebook": nb, "kind": "finding", "family": key[0], "name": key[1],
                "a": da, "b": db, "delta": None if da is None or db is None else db - da,
                "a_p_adj": _num((x or {}).get("p_adj")), "b_p_adj": _num((y or {}).get("p_adj")),
                "a_ids": " | ".join(map(str, ids_a)) if x else None,
                "b_ids": " | ".join(map(str, ids_b)) if y else None,
                "same_runs": x is not None and y is not None and ids_a == ids_b,
                "a_word": (x or {}).get("word"), "b_word": (y or {}).get("word"),
                # e.g. validation chose another method on one side: the same comparison by name,
                # of other arms
                "arms": (f"A: {arms_a[0]} vs {arms_a[1]}; B: {arms_b[0]} vs {arms_b[1]}"
                         if x and y and arms_a != arms_b else ""),
                "flag": (flag(x.get("word"), da, y.get("word"), db) if x and y else
                         "only in A" if y is None else "only in B")})
    return rows


def summary(rows: list[dict]) -> dict:
    return {"headline numbers": sum(r["kind"] == "headline" for r in rows),
            "findings": sum(r["kind"] == "finding" for r in rows),
            "same run identities": sum(r["same_runs"] for r in rows),
            "flipped": sum(r["flag"] == "flipped" for r in rows),
            "changed": sum(r["flag"] == "changed" for r in rows),
            "other arms": sum(bool(r.get("arms")) for r in rows),
            "on one side only": sum(r["flag"].startswith("only") for r in rows)}


def _fmt(v, kind: str) -> str:
    if v is None:
        return "—"
    return f"{v:.4f}" if kind == "headline" else f"{100 * v:+.2f} pt"


def text_table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        what = r["name"] if r["kind"] == "headline" else f"[{r['family']}] {r['name']}"
        what = what[:90] + (f" ({r['arms']})" if r.get("arms") else "")
        words = ("" if r["kind"] == "headline" else
                 f"  {r['a_word'] or 'no word'} | {r['b_word'] or 'no word'}")
        delta = "" if r["delta"] is None else (f" (Δ {r['delta']:+.4f})" if r["kind"] == "headline"
                                               else f" (Δ {100 * r['delta']:+.2f} pt)")
        lines.append(f"{r['flag'] or '·':<9} {r['notebook']:<11} {what}: "
                     f"{_fmt(r['a'], r['kind'])} | {_fmt(r['b'], r['kind'])}{delta}"
                     f"{'' if r['same_runs'] else '  [other runs]'}{words}")
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;font-size:.88em}th,td{border:1px solid #ddd;padding:.3em .5em;
vertical-align:top;text-align:left}th{background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}tr.flipped{background:#fdecee}tr.changed{background:#fff4e5}
.sub{color:#666}code{font-size:.85em}"""


def write_html(path: Path, rows: list[dict], a: Path, b: Path) -> Path:
    e = html.escape
    s = summary(rows)
    body = []
    for r in rows:
        what = e(r["name"]) if r["kind"] == "headline" else \
            f"{e(r['name'])}<br><span class=sub>{e(r['family'])}</span>"
        if r.get("arms"):
            what += f"<br><b>other arms</b>: {e(r['arms'])}"
        body.append(
            f"<tr class='{e(r['flag'].split()[0] if r['flag'] else '')}'><td>{e(r['notebook'])}"
            f"</td><td>{what}</td><td class=num>{_fmt(r['a'], r['kind'])}</td>"
            f"<td class=num>{_fmt(r['b'], r['kind'])}</td><td class=num>"
            f"{'—' if r['delta'] is None else _fmt(r['delta'], r['kind'])}</td>"
            f"<td>{'' if r['kind'] == 'headline' else e(str(r['a_word'] or 'no word'))}</td>"
            f"<td>{'' if r['kind'] == 'headline' else e(str(r['b_word'] or 'no word'))}</td>"
            f"<td>{'equal' if r['same_runs'] else 'differ'}<br><code>{e(str(r['a_ids']))}"
            f"</code><br><code>{e(str(r['b_ids']))}</code></td><td>{e(r['flag'])}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>hw2 compare</title>
<style>{_CSS}</style></head><body><h1>hw2 compare</h1>
<p class=sub>A: <code>{e(str(a))}</code><br>B: <code>{e(str(b))}</code></p>
<p>{e(', '.join(f'{k}: {v}' for k, v in s.items()))}. A finding's value is its difference
(the first arm minus the second, in accuracy points); <b>flipped</b>: a difference read one way in
A and the other way in B; <b>changed</b>: a difference in one, none in the other; <b>other
arms</b>: the same comparison by name, of other runs or methods (validation chose otherwise). Run identities
"differ" where either arm was trained otherwise (machine precision, profile, code).</p>
<table><tr><th>notebook</th><th>what</th><th>A</th><th>B</th><th>B − A</th><th>A's word</th>
<th>B's word</th><th>run ids (A, B)</th><th>flag</th></tr>{''.join(body)}</table></body></html>"""
    return io.atomic_write_text(path, page)


def parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hw2 compare", add_help=add_help,
                                description="compare two report folders: every headline number "
                                "and finding, flips and changes")
    p.add_argument("a", help="the first report folder (e.g. reports/quick)")
    p.add_argument("b", help="the second report folder")
    p.add_argument("--out", help="folder of compare.html (default: the reports folder's "
                                 "compare/)")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    return p


def main(args) -> int:
    from hw2lib.core import paths

    a, b = Path(args.a).resolve(), Path(args.b).resolve()
    rows = compare(load(a), load(b))
    out = Path(args.out) if args.out else paths.reports_root() / "compare"
    page = write_html(out / "compare.html", rows, a, b)
    print(text_table(rows))
    print("\n" + ", ".join(f"{k}: {v}" for k, v in summary(rows).items()))
    print(f"page: {page}")
    if args.json:
        io.write_json(args.json, {"a": str(a), "b": str(b), "summary": summary(rows),
                                  "rows": rows})
        print(f"json: {args.json}")
    return 0
