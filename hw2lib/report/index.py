"""`index.html` of a report folder: each notebook's status, time, parameters and page, the headline
numbers beside the HW2 report's (with the run identity each came from), warnings, environment.

It reads only `status.json` and each notebook's `runs/<notebook>/results.json`; a corrupt file is
named on the page instead of stopping it, so the index can always be written.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path

from hw2lib.core import io
from hw2lib.core.constants import NOTEBOOKS

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.3em}
table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:#0a7a2f;font-weight:600}.failed{color:#b00020;font-weight:600}
.skipped,.interrupted{color:#a15c00;font-weight:600}.missing{color:#888}
.warn{background:#fff4e5;border-left:5px solid #f0a000;padding:.6em 1em;margin:1em 0}
.err{background:#fdecee;border-left:5px solid #b00020;padding:.6em 1em;margin:1em 0}
code{background:#f6f6f6;padding:0 .2em}details{margin:.2em 0}
"""


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def read_results(out: Path, name: str) -> tuple[dict, str | None]:
    """A notebook's results.json: (content, None), ({}, None) when absent, ({}, error) when
    corrupt."""
    path = Path(out) / "runs" / name / "results.json"
    if not path.exists():
        return {}, None
    try:
        return io.read_json(path, what="results file"), None
    except io.CorruptFileError as exc:
        return {}, str(exc)


def _notebook_row(name: str, st: dict | None) -> str:
    e = html.escape  # every string from status.json / results.json: quotes included
    if st is None:
        return f"<tr><td>{e(name)}</td><td class=missing>not run</td>" + "<td></td>" * 3 + "</tr>"
    link = f"<a href='{e(st['html'])}'>{e(name)}</a>" if st.get("html") else e(name)
    if st.get("previous_html"):
        link += f"<br><a href='{e(st['previous_html'])}'>last passed page</a>"
    if st.get("executed"):
        link += f"<br><a href='{e(st['executed'])}'>executed notebook</a>"
    params = "".join(f"<code>{html.escape(k)}={html.escape(json.dumps(v))}</code> "
                     for k, v in sorted(st.get("params", {}).items()))
    err = f"<div class=err>{e(str(st['error']))}</div>" if st.get("error") else ""
    status = st.get("status") if st.get("status") in ("passed", "failed", "skipped",
                                                     "interrupted") else "missing"
    return (f"<tr><td>{link}</td><td class={status}>{e(str(st.get('status')))}</td>"
            f"<td class=num>{st.get('duration_s', 0):.0f} s</td>"
            f"<td>{e(str(st.get('profile', '')))}</td>"
            f"<td><details><summary>{len(st.get('params', {}))} parameters</summary>{params}"
            f"</details>{err}</td></tr>")


def write_index(out: Path, profile: str, status: dict[str, dict],
                notices: list[str] = ()) -> Path:
    """Write `out/index.html` from the notebooks' statuses and results; return its path."""
    out = Path(out)
    rows, headline, warnings = [], [], [f"<div class=err>{html.escape(n)}</div>" for n in notices]
    env = {}
    for name in NOTEBOOKS:
        st = status.get(name)
        rows.append(_notebook_row(name, st))
        results, bad = read_results(out, name)
        if bad:
            warnings.append(f"<div class=err><b>{html.escape(name)}:</b> {html.escape(bad)}</div>")
        env = env or results.get("environment") or {}
        if st is None or st.get("status") != "passed":
            continue
        for w in results.get("warnings", []):
            warnings.append(f"<div class=warn><b>{html.escape(name)}:</b> "
                            f"{html.escape(str(w))}</div>")
        for h in results.get("headline", []):
            headline.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(h.get('name', '')))}</td>"
                f"<td class=num>{_fmt(h.get('value'))}</td>"
                f"<td class=num>{_fmt(h.get('reference'))}</td>"
                f"<td><code>{html.escape(str(h.get('run_id') or '—'))}</code></td>"
                f"<td>{html.escape(str(h.get('note', '')))}</td></tr>")
    env_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in env.items())
    when = _dt.datetime.now().isoformat(timespec="seconds")
    body = f"""<!doctype html><html><head><meta charset=utf-8><title>hw2 report ({html.escape(profile)})</title>
<style>{_CSS}</style></head><body>
<h1>hw2 — EuroSAT land-cover study</h1>
<p class=sub>Profile <b>{html.escape(profile)}</b> · written {when} · executed notebooks in
<code>executed/</code> · run folders in <code>runs/</code></p>
{''.join(warnings)}
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>duration</th><th>profile</th><th>parameters</th></tr>
{''.join(rows)}</table>
<h2>Headline numbers vs the HW2 report</h2>
<table><tr><th>notebook</th><th>what</th><th>this run</th><th>HW2 report (its split)</th><th>run id</th>
<th>note</th></tr>
{''.join(headline) or '<tr><td colspan=6 class=missing>no results yet</td></tr>'}</table>
<p class=sub>The run id is the first 8 hex digits of the hash of the run's identity (recipe, data,
weights, step cap, code version); its folder is <code>runs/&lt;notebook&gt;/&lt;name&gt;-s&lt;seed&gt;-&lt;run id&gt;/</code>
with <code>identity.json</code>. Numbers of a <code>smoke</code> or <code>quick</code> run come from
subsets and few epochs on the CPU; the HW2 report's from its full protocol, on its own split ("comparable" means the same protocol, not the same data).</p>
<h2>Environment</h2><table>{env_rows or '<tr><td class=missing>unknown</td></tr>'}</table>
</body></html>"""
    path = out / "index.html"
    io.atomic_write_text(path, body)
    return path
