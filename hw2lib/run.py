"""Papermill runner and HTML report: profiles, `hw2 run`, `hw2 report`, `index.html`.

One notebook run = parameters (profile ∪ overrides ∪ paths the runner owns) → papermill executes the
notebook into `OUT/executed/` → nbconvert renders `OUT/<notebook>.html` (also when it failed) → the
outcome is recorded in `OUT/status.json`. Each notebook writes `OUT/runs/<notebook>/results.json`;
the index reads those and sets the headline numbers beside the HW2 report's.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = NOTEBOOK_DIR / "profiles"
NOTEBOOKS = ("A-train", "A-vis", "B-ablation", "C-longtail")  # run order
PROFILES = ("smoke", "quick", "full")
KERNEL_NAME = "hw2"
# Parameters the runner sets itself; a profile or -p may not.
RUNNER_PARAMS = ("run_dir", "profile")
# Inputs one notebook takes from another notebook's run folder.
DEPENDS = {"A-vis": {"checkpoint": ("A-train", "model/best.pt")}}
HIDE_INPUT_TAG = "hide-input"

log = logging.getLogger("hw2.run")


class RunnerError(RuntimeError):
    """A problem with the request itself (unknown notebook, profile or parameter)."""


# --------------------------------------------------------------------------- profiles & params


def choose_profile(profile: str) -> tuple[str, str]:
    """Resolve `auto` to `full` where CUDA is available and `quick` otherwise; say why."""
    if profile != "auto":
        if profile not in PROFILES:
            raise RunnerError(f"Unknown profile {profile!r}. Choose one of: auto, {', '.join(PROFILES)}.")
        return profile, f"profile {profile!r} as asked"
    import torch

    if torch.cuda.is_available():
        return "full", f"CUDA device found ({torch.cuda.get_device_name(0)}): running the full protocol"
    return "quick", "no CUDA device: running the 'quick' profile (real EuroSAT, few epochs) on the CPU"


def load_profile(profile: str, profile_dir: Path = PROFILE_DIR) -> dict[str, dict]:
    """The profile's parameter sets, one mapping per notebook."""
    import yaml

    path = Path(profile_dir) / f"{profile}.yaml"
    if not path.exists():
        raise RunnerError(f"Profile file {path} not found (profiles: {', '.join(PROFILES)}).")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - set(NOTEBOOKS)
    if unknown:
        raise RunnerError(f"{path}: unknown notebook(s) {sorted(unknown)}; notebooks are {NOTEBOOKS}.")
    return {nb: dict(data.get(nb) or {}) for nb in NOTEBOOKS}


def notebook_path(name: str) -> Path:
    if name not in NOTEBOOKS:
        raise RunnerError(f"Unknown notebook {name!r}. Notebooks: {', '.join(NOTEBOOKS)}.")
    return NOTEBOOK_DIR / f"{name}.ipynb"


def notebook_parameters(name: str) -> dict[str, object]:
    """The names and defaults of the notebook's `parameters` cell (papermill's own reading)."""
    import papermill as pm

    params = pm.inspect_notebook(str(notebook_path(name)))
    return {k: v.get("default") for k, v in params.items()}


def parse_value(text: str):
    """`-p NAME VALUE`: VALUE is read as YAML (numbers, booleans, null, lists), else kept a string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def resolve_parameters(name: str, profile_params: dict, overrides: dict) -> dict:
    """Profile ∪ overrides, checked against the notebook's parameters cell."""
    allowed = notebook_parameters(name)
    params = {**profile_params, **overrides}
    for key in params:
        if key in RUNNER_PARAMS:
            raise RunnerError(f"{name}: parameter {key!r} is set by the runner, not by a profile or -p.")
        if key not in allowed:
            raise RunnerError(
                f"{name}: unknown parameter {key!r} (not in the notebook's parameters cell). "
                f"Known: {', '.join(sorted(allowed))}."
            )
    return params


# --------------------------------------------------------------------------- kernel, execute, render


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Make sure the `hw2` kernel (this interpreter) exists; install it into sys.prefix if not."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if Path(spec.argv[0]).exists():
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name="Python (hw2)", prefix=sys.prefix)
    return name


def render_html(executed: Path, html_path: Path) -> int:
    """nbconvert HTML: set-up cells (tag `hide-input`) show outputs only; figures embedded."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(template_name="lab")
    tags = TagRemovePreprocessor(remove_input_tags={HIDE_INPUT_TAG}, enabled=True)
    exporter.register_preprocessor(tags, enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    html_path.write_text(body, encoding="utf-8")
    return html_path.stat().st_size


@dataclass
class RunResult:
    notebook: str
    status: str  # passed | failed | skipped
    duration_s: float
    html: str | None
    executed: str | None
    run_dir: str
    params: dict = field(default_factory=dict)
    error: str | None = None
    started: str = ""
    profile: str = ""


def _status_path(out: Path) -> Path:
    return out / "status.json"


def read_status(out: Path) -> dict[str, dict]:
    p = _status_path(out)
    return json.loads(p.read_text()) if p.exists() else {}


def _write_status(out: Path, result: RunResult) -> None:
    status = read_status(out)
    status[result.notebook] = result.__dict__
    tmp = _status_path(out).with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str))
    os.replace(tmp, _status_path(out))


def run_notebook(
    name: str,
    profile: str,
    overrides: dict | None = None,
    out: Path | str | None = None,
    *,
    extra: dict | None = None,
    log_output: bool = True,
) -> RunResult:
    """Execute one notebook with papermill and render its HTML page (also on failure)."""
    import papermill as pm

    out = Path(out or REPO_ROOT / "reports" / profile).resolve()
    params = resolve_parameters(name, load_profile(profile)[name], overrides or {})
    run_dir = out / "runs" / name
    params.update(extra or {})
    params.update(run_dir=str(run_dir), profile=profile)
    (out / "executed").mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    executed = out / "executed" / f"{name}.ipynb"
    html_path = out / f"{name}.html"
    kernel = ensure_kernel()
    started = _dt.datetime.now().isoformat(timespec="seconds")
    print(f"[{name}] running with profile {profile!r} → {html_path}", flush=True)
    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(notebook_path(name)),
            str(executed),
            parameters=params,
            kernel_name=kernel,
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
            # cells' printed output (one line per epoch) streams to the terminal as it comes
            stdout_file=sys.stdout if log_output else None,
            stderr_file=sys.stderr if log_output else None,
        )
    except pm.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    except Exception as exc:  # kernel died, timeout, ...: still render what exists
        error = f"{type(exc).__name__}: {exc}"
    duration = time.perf_counter() - t0
    html_file = None
    if executed.exists():
        size = render_html(executed, html_path)
        html_file = html_path.name
        print(f"[{name}] page {html_path} ({size / 1e6:.1f} MB)", flush=True)
    result = RunResult(
        notebook=name,
        status="failed" if error else "passed",
        duration_s=round(duration, 1),
        html=html_file,
        executed=str(executed.relative_to(out)) if executed.exists() else None,
        run_dir=str(run_dir.relative_to(out)),
        params={k: v for k, v in params.items() if k not in RUNNER_PARAMS},
        error=error,
        started=started,
        profile=profile,
    )
    _write_status(out, result)
    verdict = f"FAILED: {error}" if error else "passed"
    print(f"[{name}] {verdict} in {duration:.0f} s", flush=True)
    return result


def report(
    profile: str = "auto",
    out: Path | str | None = None,
    only: list[str] | None = None,
    overrides: dict | None = None,
    force: bool = False,
) -> tuple[Path, list[RunResult]]:
    """Run the notebooks in order, render each, write `index.html`. Finished ones are skipped
    unless `force` (or their parameters changed), so a long study resumes."""
    profile, why = choose_profile(profile)
    print(f"hw2 report: {why}", flush=True)
    out = Path(out or REPO_ROOT / "reports" / profile).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = list(only) if only else list(NOTEBOOKS)
    for n in names:
        notebook_path(n)
    profile_params = load_profile(profile)
    results = []
    for name in names:
        params = resolve_parameters(name, profile_params[name], (overrides or {}).get(name, {}))
        extra = {}
        missing = None
        for pname, (dep, fname) in DEPENDS.get(name, {}).items():
            path = out / "runs" / dep / fname
            extra[pname] = str(path)
            if not path.exists():
                missing = f"needs {dep}'s {fname} ({path}); run {dep} first"
        prev = read_status(out).get(name)
        if (
            not force
            and prev
            and prev.get("status") == "passed"
            and prev.get("params") == {**params, **extra}
        ):
            print(f"[{name}] already passed with these parameters; skipped (use --force to re-run)")
            results.append(RunResult(**prev))
            continue
        if missing:
            res = RunResult(name, "skipped", 0.0, None, None, f"runs/{name}", params, missing,
                            profile=profile)
            _write_status(out, res)
            print(f"[{name}] SKIPPED: {missing}", flush=True)
            results.append(res)
            continue
        results.append(
            run_notebook(name, profile, (overrides or {}).get(name, {}), out, extra=extra)
        )
    index = write_index(out, profile)
    print(f"index: {index}")
    return index, results


# --------------------------------------------------------------------------- index.html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.3em}
table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:#0a7a2f;font-weight:600}.failed{color:#b00020;font-weight:600}
.skipped{color:#a15c00;font-weight:600}.missing{color:#888}
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


def _env_rows(out: Path) -> list[tuple[str, str]]:
    for name in NOTEBOOKS:
        p = out / "runs" / name / "results.json"
        if p.exists():
            env = json.loads(p.read_text()).get("environment") or {}
            if env:
                return [(k, str(v)) for k, v in env.items()]
    return []


def write_index(out: Path, profile: str) -> Path:
    """`index.html`: status, duration, parameters and the headline numbers of every notebook."""
    out = Path(out)
    status = read_status(out)
    rows, headline, warnings = [], [], []
    for name in NOTEBOOKS:
        st = status.get(name)
        res_path = out / "runs" / name / "results.json"
        results = json.loads(res_path.read_text()) if res_path.exists() else {}
        if st is None:
            rows.append(f"<tr><td>{name}</td><td class=missing>not run</td>" + "<td></td>" * 3 + "</tr>")
            continue
        link = f"<a href='{st['html']}'>{name}</a>" if st.get("html") else name
        params = "".join(
            f"<code>{html.escape(k)}={html.escape(json.dumps(v))}</code> "
            for k, v in sorted(st.get("params", {}).items())
        )
        err = f"<div class=err>{html.escape(st['error'])}</div>" if st.get("error") else ""
        rows.append(
            f"<tr><td>{link}</td><td class={st['status']}>{st['status']}</td>"
            f"<td class=num>{st['duration_s']:.0f} s</td><td>{html.escape(st.get('profile', ''))}</td>"
            f"<td><details><summary>{len(st.get('params', {}))} parameters</summary>{params}"
            f"</details>{err}</td></tr>"
        )
        if st["status"] == "passed":
            for w in results.get("warnings", []):
                warnings.append(f"<div class=warn><b>{name}:</b> {html.escape(w)}</div>")
            for h in results.get("headline", []):
                headline.append(
                    f"<tr><td>{name}</td><td>{html.escape(h.get('name', ''))}</td>"
                    f"<td class=num>{_fmt(h.get('value'))}</td>"
                    f"<td class=num>{_fmt(h.get('reference'))}</td>"
                    f"<td>{html.escape(h.get('note', ''))}</td></tr>"
                )
    env = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                  for k, v in _env_rows(out))
    when = _dt.datetime.now().isoformat(timespec="seconds")
    body = f"""<!doctype html><html><head><meta charset=utf-8><title>hw2 report ({profile})</title>
<style>{_CSS}</style></head><body>
<h1>hw2 — EuroSAT land-cover study</h1>
<p class=sub>Profile <b>{profile}</b> · written {when} · executed notebooks in <code>executed/</code></p>
{''.join(warnings)}
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>duration</th><th>profile</th><th>parameters</th></tr>
{''.join(rows)}</table>
<h2>Headline numbers vs the HW2 report</h2>
<table><tr><th>notebook</th><th>what</th><th>this run</th><th>HW2 report</th><th>note</th></tr>
{''.join(headline) or '<tr><td colspan=5 class=missing>no results yet</td></tr>'}</table>
<p class=sub>Numbers of a <code>smoke</code> or <code>quick</code> run come from a subset and few epochs
on the CPU; the HW2 report's come from its full protocol. Compare like with like under <code>full</code>.</p>
<h2>Environment</h2><table>{env or '<tr><td class=missing>unknown</td></tr>'}</table>
</body></html>"""
    path = out / "index.html"
    path.write_text(body, encoding="utf-8")
    return path
