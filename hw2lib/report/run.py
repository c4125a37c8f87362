"""Papermill runner: profiles, `hw2 run`, `hw2 report`.

One report = every selected notebook's parameters resolved and checked first (profile ∪ `-p`,
see `params`) → each notebook executed by papermill into `OUT/executed/` → rendered by nbconvert
into `OUT/<notebook>.html` (also when it failed; the last passed page is kept beside it) → its
outcome recorded in `OUT/status.json` → `OUT/index.html` (see `index`), written whatever happened.
Each notebook writes `OUT/runs/<notebook>/results.json`. A notebook that takes another's output
(A-vis takes A-train's model) records the identity of what it took, and is run again when that
changes; it is not run at all when its input failed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hw2lib.core import gpu_check, io, paths
from hw2lib.core.constants import NOTEBOOKS
from hw2lib.report import folder_lock
from hw2lib.report.index import read_results, write_index
from hw2lib.report.kernels import logged_kernel_manager
from hw2lib.report.page import render_html
from hw2lib.report.params import (
    RUNNER_PARAMS,
    ParameterError,
    read_notebook_parameters,
    resolve,
    split_overrides,
)
from hw2lib.report.rehearsal import REHEARSAL
from hw2lib.train.executor import check_executor, check_ray_address

REPO_ROOT = paths.SOURCE_ROOT
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILE_DIR = NOTEBOOK_DIR / "profiles"
PROFILES = ("smoke", "quick", "full")
KERNEL_NAME = "hw2"
# Inputs one notebook takes from another: parameter → the notebook whose results.json it reads.
DEPENDS = {"A-vis": {"train_results": "A-train"}}
REPORT_MARKER = ".hw2-report"  # marks a folder as an hw2 report folder (safe to write into)
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"


class RunnerError(RuntimeError):
    """A problem with the request itself (unknown notebook, profile or parameter, bad folder)."""


# --------------------------------------------------------------------------- profiles & params


def choose_profile(profile: str, *, cpu_ok: bool = False) -> tuple[str, str]:
    """Resolve `auto` to `full` where CUDA is available and `quick` otherwise; say why. `full`
    asked for by name needs a usable GPU too (it is days of work on a CPU): without one it is an
    error naming what is wrong, unless `cpu_ok` (the plan, which trains nothing; `-p device cpu`,
    the rehearsal) or `$HW2_ALLOW_CPU=1`."""
    if profile != "auto":
        if profile not in PROFILES:
            raise RunnerError(f"Unknown profile {profile!r}. Choose one of: auto, {', '.join(PROFILES)}.")
        if profile == "full" and not cpu_ok:
            from hw2lib.core.runtime import default_device

            if default_device().type != "cuda":
                why = gpu_check.check() or "torch sees no CUDA device on this machine"
                if not gpu_check.cpu_allowed():
                    raise RunnerError(
                        f"profile 'full' needs a usable GPU: {why}. Run --profile quick on the "
                        "CPU; -p device cpu (or $HW2_ALLOW_CPU=1) runs full on the CPU on "
                        "purpose; --rehearse runs every training of full cut to a step.")
                print(f"warning: profile 'full' on the CPU ($HW2_ALLOW_CPU): {why}",
                      file=sys.stderr)
        return profile, f"profile {profile!r} as asked"
    import torch

    from hw2lib.core.runtime import default_device

    if default_device().type == "cuda":
        return "full", f"CUDA device found ({torch.cuda.get_device_name(0)}): running the full protocol"
    unusable = gpu_check.check()  # an NVIDIA device torch cannot use: stop, unless overridden
    if unusable and not gpu_check.cpu_allowed():
        raise RunnerError(unusable)
    if unusable:
        print(f"warning: {unusable}", file=sys.stderr)
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


def notebook_parameters(name: str):
    """The parameters of the notebook's `parameters` cell: name → Param (default, type, help)."""
    return read_notebook_parameters(notebook_path(name))


def parse_value(text: str):
    """`-p NAME VALUE`: VALUE is read as YAML (numbers, booleans, null, lists), else kept a string.
    Strings that name a float (YAML 1.1 reads `1e-3` as one) become floats where the parameter is
    a float (see `params.check_value`)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def resolve_parameters(name: str, profile_params: dict, overrides: dict) -> dict:
    """Profile ∪ overrides of one notebook, every key known and every value checked."""
    try:
        return resolve(name, notebook_parameters(name), profile_params, overrides)
    except ParameterError as exc:
        raise RunnerError(str(exc)) from None


def plan_parameters(profile: str, names: list[str], overrides: dict | None = None, *,
                    force: bool = False, per_notebook: bool = False) -> dict[str, dict]:
    """Every selected notebook's checked parameters, before anything runs. `overrides` is one
    mapping applied to each notebook that defines the key (a key none defines is an error), or,
    with `per_notebook`, a mapping per notebook. `force` sets `force=True` where defined."""
    for n in names:
        notebook_path(n)
    profile_params = load_profile(profile)
    try:
        defined = {n: notebook_parameters(n) for n in names}
        per_nb = (overrides or {}) if per_notebook else split_overrides(overrides or {}, defined)
        out = {}
        for n in names:
            ov = dict(per_nb.get(n, {}))
            if force and "force" in defined[n]:
                ov["force"] = True
            out[n] = resolve(n, defined[n], profile_params[n], ov)
    except ParameterError as exc:
        raise RunnerError(str(exc)) from None
    for n, params in out.items():
        check_executor_params(n, params)
    return out


def check_executor_params(name: str, params: dict) -> None:
    """A notebook's executor settings, before any data is read: `gpus_per_run` Ray can give, and
    a `ray_address` where something answers (see `executor.check_ray_address`)."""
    if params.get("executor") != "ray":
        return
    try:
        check_executor("ray", params.get("gpus_per_run", 1.0))
        check_ray_address(params.get("ray_address"))
    except ValueError as exc:
        raise RunnerError(f"{name}: {exc}") from None


# --------------------------------------------------------------------------- the report folder


def prepare_out(out: Path | str) -> Path:
    """The report folder, created; refuses a folder that is not empty and not an hw2 report
    (so `--out /` or `--out ~` cannot scatter files)."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise RunnerError(f"--out {out} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_MARKER).exists():
        raise RunnerError(f"--out {out} is not empty and is not an hw2 report folder; "
                          "choose a new or empty folder (e.g. reports/mine).")
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_MARKER).touch()
    return out


def read_status(out: Path) -> tuple[dict[str, dict], str | None]:
    """`status.json` as {notebook: record}, and a notice when it was corrupt (it is then moved
    aside and rebuilt from the runs that follow)."""
    path = Path(out) / "status.json"
    if not path.exists():
        return {}, None
    try:
        status = io.read_json(path, what="status file")
        if not isinstance(status, dict):
            raise io.CorruptFileError(f"status file {path} is not a JSON object")
        return status, None
    except io.CorruptFileError as exc:
        aside = path.with_name(f"status.corrupt-{int(time.time())}.json")
        path.replace(aside)
        return {}, f"{exc}. It was moved to {aside.name} and is rebuilt from this run."


def write_status(out: Path, record: dict) -> None:
    """Record one notebook's status (a `RunResult` as a dict) in `out/status.json`."""
    status, _ = read_status(out)
    status[record["notebook"]] = record
    io.write_json(Path(out) / "status.json", status)


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


@dataclass
class RunResult:
    notebook: str
    status: str  # passed | failed | skipped | interrupted | running (killed while running)
    duration_s: float
    html: str | None
    executed: str | None
    run_dir: str
    params: dict = field(default_factory=dict)
    error: str | None = None
    started: str = ""
    profile: str = ""
    previous_html: str | None = None  # the last passed page, kept when this run failed


def run_notebook(name: str, profile: str, params: dict, out: Path, *,
                 log_output: bool = True) -> RunResult:
    """Execute one notebook with checked `params` (see `plan_parameters`) and render its page
    (also on failure: the previous passed page is then kept as `<name>.passed.html`)."""
    import papermill as pm

    out = Path(out)
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (out / "executed").mkdir(parents=True, exist_ok=True)
    executed = out / "executed" / f"{name}.ipynb"
    kernel_log = out / "executed" / f"{name}.kernel.log"  # the kernel's own stderr
    kernel_log.unlink(missing_ok=True)
    html_path = out / f"{name}.html"
    prev, _ = read_status(out)
    was_passed = (prev.get(name) or {}).get("status") == "passed" and html_path.exists()
    kernel = ensure_kernel()
    started = _dt.datetime.now().isoformat(timespec="seconds")
    # Order matters for a kill at any point: first the status says "running" (so a killed run is
    # never taken for a passed one and the next run repeats it), then the old results.json goes
    # (it must not outlive a failure of this run), then the notebook runs.
    write_status(out, asdict(RunResult(name, "running", 0.0, None, None,
                                        str(run_dir.relative_to(out)), params, None, started,
                                        profile, (prev.get(name) or {}).get("previous_html"))))
    if (run_dir / "results.json").exists():
        (run_dir / "results.json").replace(run_dir / "results.previous.json")
    print(f"[{name}] running with profile {profile!r} → {html_path}", flush=True)
    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(notebook_path(name)), str(executed),
            parameters={**params, "run_dir": str(run_dir), "profile": profile},
            kernel_name=kernel, cwd=str(NOTEBOOK_DIR), progress_bar=False,
            kernel_manager_class=logged_kernel_manager(kernel_log),
            # cells' printed output (one line per epoch) streams to the terminal as it comes
            stdout_file=sys.stdout if log_output else None,
            stderr_file=sys.stderr if log_output else None)
    except pm.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    except KeyboardInterrupt:
        error = INTERRUPTED
    except Exception as exc:  # kernel died, timeout, ...: still render what exists
        error = f"{type(exc).__name__}: {exc}"
    duration = time.perf_counter() - t0
    previous_html = None
    if error and was_passed:
        previous_html = f"{name}.passed.html"
        shutil.copyfile(html_path, out / previous_html)
    html_file = None
    if executed.exists():
        size = render_html(executed, html_path)
        html_file = html_path.name
        print(f"[{name}] page {html_path} ({size / 1e6:.1f} MB)", flush=True)
    state = "interrupted" if error == INTERRUPTED else "failed" if error else "passed"
    result = RunResult(name, state, round(duration, 1), html_file,
                       str(executed.relative_to(out)) if executed.exists() else None,
                       str(run_dir.relative_to(out)), params, error, started, profile,
                       previous_html)
    write_status(out, asdict(result))
    said = {"passed": "passed", "interrupted": "INTERRUPTED"}.get(
        state, f"FAILED: {error} (the kernel's own log: {kernel_log})")
    print(f"[{name}] {said} in {duration:.0f} s", flush=True)
    if error == INTERRUPTED:
        raise KeyboardInterrupt
    return result


def dependency_inputs(name: str, out: Path, status: dict) -> tuple[dict, str | None, dict]:
    """For a notebook that takes another's output: (parameters pointing at it, why it cannot run
    or None, the identity of what it takes, e.g. {"A-train": "<run id>"})."""
    extra, why, ids = {}, None, {}
    for pname, dep in DEPENDS.get(name, {}).items():
        extra[pname] = str(out / "runs" / dep / "results.json")
        dep_status = (status.get(dep) or {}).get("status")
        results, bad = read_results(out, dep)
        if dep_status != "passed":
            state = dep_status or "not run"
            why = (f"needs {dep}'s model, but {dep} {state} in this report folder; "
                   f"run {dep} first (hw2 report --only {dep} {name})")
        elif bad or not results.get("run_id"):
            why = bad or f"{dep}'s results.json names no run id; run {dep} again"
        else:
            ids[dep] = results["run_id"]
    return extra, why, ids


def rehearsal_overrides(names: list[str], overrides: dict | None) -> dict[str, dict]:
    """Per notebook: `REHEARSAL`'s cuts, then the user's `-p` keys where the notebook has them."""
    try:
        mine = split_overrides(overrides or {}, {n: notebook_parameters(n) for n in names})
    except ParameterError as exc:
        raise RunnerError(str(exc)) from None
    return {n: {**REHEARSAL[n], **mine.get(n, {})} for n in names}


def report(profile: str = "auto", out: Path | str | None = None, only: list[str] | None = None,
           overrides: dict | None = None, force: bool = False,
           rehearse: bool = False) -> tuple[Path, list[RunResult]]:
    """Check every selected notebook's parameters, then run them in order, render each, and
    write `index.html` (always: after a failure or Ctrl-C too). A notebook that passed with the
    same parameters (and the same inputs) is not run again unless `force`, so a study resumes.
    `rehearse`: every training of the profile cut to a step on the CPU (`REHEARSAL`), into
    `reports/<profile>-rehearsal/` by default."""
    cpu = rehearse or (overrides or {}).get("device") == "cpu"
    profile, why = choose_profile(profile, cpu_ok=cpu)
    names = list(only) if only else list(NOTEBOOKS)
    if rehearse:
        planned = plan_parameters(profile, names, rehearsal_overrides(names, overrides),
                                  force=force, per_notebook=True)
        why += "; a rehearsal: every training cut to one step on the CPU"
    else:
        planned = plan_parameters(profile, names, overrides, force=force)
    if not rehearse:
        planned = with_packing(profile, planned)
    default = f"{profile}-rehearsal" if rehearse else profile
    out = prepare_out(out or paths.reports_root() / default)
    with locked(out), sigterm_as_interrupt():
        print(f"hw2 report: {why}; parameters of {', '.join(names)} checked", flush=True)
        status, notice = read_status(out)
        if notice:
            print(f"warning: {notice}", file=sys.stderr, flush=True)
        results = []
        try:
            for i, name in enumerate(names):
                results.append(_run_one(name, profile, planned[name], out, force))
                if rehearse:
                    drop_checkpoints(out, names[: i + 1], names[i + 1:])
        finally:
            status, _ = read_status(out)
            index = write_index(out, profile, status, [notice] if notice else [])
            print(f"index: {index}", flush=True)
    return index, results


def with_packing(profile: str, planned: dict[str, dict]) -> dict[str, dict]:
    """`full` on one GPU: B and C pack their runs (Ray, a share of the GPU each) where `hw2 doctor`
    measured packing faster on this GPU (`gpu_levers.packing_choice`) and the user chose no
    executor; said in one line. Otherwise as planned."""
    import importlib.util

    takers = [n for n, p in planned.items() if "executor" in notebook_parameters(n)
              and "executor" not in p and "gpus_per_run" not in p]
    if profile != "full" or not takers or importlib.util.find_spec("ray") is None:
        return planned
    import torch

    if torch.cuda.device_count() != 1:
        return planned
    from hw2lib.train.gpu_levers import packing_choice

    choice = packing_choice(torch.cuda.get_device_name(0))
    if not choice:
        return planned
    print(f"hw2 report: packing {round(1 / choice['gpus_per_run'])} runs on the GPU at once "
          f"(Ray, gpus_per_run {choice['gpus_per_run']:g}: hw2 doctor measured "
          f"{choice['measured_gain']:.2f}× one run); -p executor local runs one at a time",
          flush=True)
    return {n: ({**p, "executor": "ray", "gpus_per_run": choice["gpus_per_run"]} if n in takers
                else p) for n, p in planned.items()}


def drop_checkpoints(out: Path, done: list[str], ahead: list[str]) -> None:
    """A rehearsal's checkpoints (GBs, and never resumed) go once no notebook still to run takes
    them: every `*.pt` under the done notebooks' run folders but those an `ahead` one depends
    on (A-vis takes A-train's model)."""
    needed = {dep for nb in ahead for dep in DEPENDS.get(nb, {}).values()}
    for nb in done:
        if nb not in needed:
            for f in (Path(out) / "runs" / nb).glob("*/*.pt"):
                f.unlink()


@contextlib.contextmanager
def locked(out: Path):
    """The report folder's lock (see `folder_lock`) around a block; a folder another live
    process holds is a RunnerError naming it and that process."""
    try:
        path = folder_lock.acquire(out)
    except folder_lock.FolderBusyError as exc:
        raise RunnerError(str(exc)) from None
    try:
        yield path
    finally:
        folder_lock.release(path)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a `kill`, a job scheduler's stop) raises KeyboardInterrupt like Ctrl-C, so the
    notebook is recorded "interrupted" and the index written (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run_one(name: str, profile: str, params: dict, out: Path, force: bool) -> RunResult:
    status, _ = read_status(out)
    extra, blocked, inputs = dependency_inputs(name, out, status)
    params = {**params, **extra}
    prev = status.get(name)
    if blocked:
        kept = prev.get("html") if prev and prev.get("status") == "passed" else None
        res = RunResult(name, "skipped", 0.0, None, None, f"runs/{name}", params, blocked,
                        profile=profile, previous_html=kept)
        write_status(out, asdict(res))
        print(f"[{name}] SKIPPED: {blocked}", flush=True)
        return res
    took = read_results(out, name)[0].get("inputs", {}) if inputs else {}
    same_inputs = all((took.get(dep) or {}).get("run_id") == rid for dep, rid in inputs.items())
    if not force and prev and prev.get("status") == "passed" and prev.get("params") == params \
            and same_inputs:
        print(f"[{name}] already passed with these parameters; skipped (use --force to re-run)")
        return RunResult(**prev)
    if not same_inputs and took:
        print(f"[{name}] its input changed ({', '.join(inputs)} was run again): re-running",
              flush=True)
    return run_notebook(name, profile, params, out)


__all__ = ["RUNNER_PARAMS", "RunnerError", "RunResult", "choose_profile", "load_profile",
           "plan_parameters", "report", "run_notebook", "prepare_out", "read_status"]
