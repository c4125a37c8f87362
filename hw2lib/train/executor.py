"""One executor for a list of experiments: `local` (in this process, one after another: the
default, and what the tests use) or `ray` (each experiment a Ray task, on this machine or on an
existing cluster at `ray_address`).

Both call `experiment.run_experiment` with the same arguments, so the run folders and results are
the same (on the CPU bit for bit when a Ray task uses as many torch threads as the driver). A run
that raises is recorded as failed (its error kept) and the others go on; when every run failed,
`split_failed` raises `AllRunsFailed` naming them. Ctrl-C stops everything. One line is printed per
finished run, readable under papermill.

A Ray task depends on nothing of the driver's disk or working directory, so any node of a cluster
can run it: the dataset (decoded images, labels, split rows) travels once through the object store
with its fingerprint computed on the driver; `hw2lib` itself travels with the job (`runtime_env`
`py_modules`: a node needs the Python environment — torch, numpy, ... — not this checkout); a task
trains in a folder of its own node and returns the folder's files, which the driver writes under
its `run_root`, so `runs/` holds every run with the same identity and files as a local run. A run
finished earlier on the driver is reused (its result is handed to the task); an interrupted one is
trained again from its start (its checkpoints stay on the driver). Each task resolves its device
itself (a GPU when Ray gave it one, else the CPU) and uses its node's cores ÷ its concurrent runs
as torch threads.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import traceback
from pathlib import Path

EXECUTORS = ("local", "ray")


class AllRunsFailed(RuntimeError):
    """Every run of an experiment list failed: nothing is left to tabulate."""


def _describe(cfg: dict) -> str:
    return (f"{cfg['name']} (seed {cfg['seed']}): {cfg['model']}, {cfg['optimizer']} "
            f"lr {cfg['lr']:g}, {cfg['schedule']}, {cfg['epochs']} ep")


def _finished_line(cfg: dict, out: dict) -> str:
    if out.get("failed"):
        return f"  FAILED {cfg['name']} (seed {cfg['seed']}): {out['error']}"
    return (f"  run {out['run_id']} {cfg['name']} (seed {cfg['seed']}): val {out['val_acc']:.4f}, "
            f"test {out['test_acc']:.4f}{' (reused)' if out['reused'] else ''}")


def _failure(exc: BaseException, cfg: dict) -> dict:
    return {"failed": True, "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(), "config": cfg}


def _run_one(job: dict) -> dict:
    """run_experiment(**job), a failure returned as {"failed": True, "error", "traceback",
    "config"}."""
    from hw2lib.train.experiment import run_experiment

    try:
        return run_experiment(**job)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the others
        return _failure(exc, job["cfg"])


# --------------------------------------------------------------------------- checks


def check_executor(executor: str, gpus_per_run: float) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    g = float(gpus_per_run)
    if not g > 0:
        raise ValueError(f"gpus_per_run must be > 0, got {gpus_per_run!r}")
    if g > 1 and g != int(g):
        raise ValueError(f"gpus_per_run must be at most 1 (a share of one GPU, e.g. 0.25) or a "
                         f"whole number of GPUs; got {gpus_per_run!r}, which Ray cannot give a "
                         f"task: use {math.floor(g)} or {math.ceil(g)}")


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `ray://host:port`; None for `auto` / `local` (Ray finds
    those itself). Anything else is a ValueError that says what is expected."""
    text = address.strip()
    if text in ("auto", "local"):
        return None
    rest = text.split("://", 1)[1] if text.startswith("ray://") else text
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in text and not text.startswith("ray://"):
        raise ValueError(f"ray_address {address!r} is not an address: give host:port (the head's "
                         "GCS port, e.g. 127.0.0.1:6379), ray://host:10001 (Ray Client) or auto")
    return host.strip("[]"), int(port)


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """Nothing for None/auto; otherwise a ValueError (one line, before any data is read) when
    nothing answers at the address."""
    if not address:
        return
    where = parse_ray_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"ray_address {address!r}: nothing answers at {where[0]}:{where[1]} "
                         f"({reason}); start the cluster there (`ray start --head --port "
                         f"{where[1]}`) or give the address `ray start` printed") from None


# --------------------------------------------------------------------------- resources


def runs_per_node(node_gpus: float, gpus_per_run: float) -> int:
    """How many runs of `gpus_per_run` GPUs fit on a node with `node_gpus` GPUs at once."""
    if gpus_per_run <= 1:
        return int(node_gpus) * int(1 / gpus_per_run + 1e-9)
    return int(node_gpus // gpus_per_run)


def run_resources(nodes: list[dict], gpus_per_run: float, driver_threads: int, *,
                  require_gpu: bool = False) -> tuple[dict, int, str]:
    """Each task's Ray resources, its torch threads and the line that says so, from the alive
    nodes' resources ([{"CPU": n, "GPU": n}, ...]).

    With GPUs: `gpus_per_run` of a GPU and the cores ÷ concurrent runs of the tightest GPU node
    (so packed runs do not fight over cores). CPU only: as many threads as the driver uses (the
    same numbers as the local executor, bit for bit), at most a node's cores."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) > 0]
    if gpu_nodes:
        fits = [(n, runs_per_node(n["GPU"], gpus_per_run)) for n in gpu_nodes]
        fits = [(n, k) for n, k in fits if k > 0]
        if not fits:
            most = max(n["GPU"] for n in gpu_nodes)
            raise ValueError(f"gpus_per_run={gpus_per_run:g} is more than any node has (at most "
                             f"{most:g} GPUs): lower gpus_per_run")
        threads = max(1, min(int(n.get("CPU", 1)) // k for n, k in fits))
        total = sum(n["GPU"] for n in gpu_nodes)
        return ({"num_gpus": gpus_per_run, "num_cpus": threads}, threads,
                f"{total:g} GPU(s), {gpus_per_run:g} per run, {threads} CPU thread(s) per run")
    if require_gpu:
        raise ValueError(f"the Ray cluster has no GPU ({len(nodes)} node(s), CPU only) and this "
                         "profile needs one (full): add GPU nodes (ray start --num-gpus N), or "
                         "set device='cpu' to train on CPU workers on purpose")
    cpus = max((int(n.get("CPU", 0)) for n in nodes), default=0)
    if cpus < 1:
        raise ValueError("the Ray cluster has no CPU: start its nodes with --num-cpus")
    threads = max(1, min(int(driver_threads), cpus))
    return {"num_cpus": threads}, threads, f"CPU workers, {threads} thread(s) per run"


def task_device(gpu_ids) -> str:
    """The device of a Ray task: a GPU where Ray gave it one (its own CUDA_VISIBLE_DEVICES), else
    the CPU — never the notebook's device."""
    return "cuda" if list(gpu_ids) else "cpu"


# --------------------------------------------------------------------------- run folders


def folder_files(folder) -> dict[str, bytes]:
    """Every file under `folder` by relative path (what a Ray task sends back)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def store_folder(dest, files: dict[str, bytes]) -> Path:
    """Write a returned run folder as `dest`, replacing what was there only once it is whole."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, blob in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    tmp.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def finished_runs(run_root, cfg: dict) -> dict[str, dict]:
    """The finished runs of `cfg`'s name and seed under `run_root`: {folder name: result}."""
    from hw2lib.core import io
    from hw2lib.train.experiment import RESULT_FILE

    out = {}
    for folder in Path(run_root).glob(f"{cfg['name']}-s{cfg['seed']}-*"):
        if (folder / RESULT_FILE).is_file() and (folder / "predictions.npz").is_file():
            try:
                out[folder.name] = io.read_json(folder / RESULT_FILE, what="result")
            except io.CorruptFileError:
                continue  # trained again by the task
    return out


# --------------------------------------------------------------------------- Ray tasks


def worker_info() -> dict:
    """What a node runs hw2lib with (compared with the driver's before any run)."""
    import platform

    import torch

    import hw2lib

    return {"hw2lib": hw2lib.__version__, "hw2lib_file": hw2lib.__file__,
            "torch": torch.__version__, "python": platform.python_version()}


def _ray_task(job: dict, ds, fingerprint: dict, threads: int, weights_file) -> dict:
    """One run on whatever node Ray chose: the device and threads resolved here, trained in a
    folder of this node, its files returned (a reused run returns none)."""
    import tempfile

    import ray
    import torch

    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="hw2-run-"))
    try:
        job = {**job, "ds": ds, "fingerprint": fingerprint, "run_root": work / "runs",
               "device": task_device(ray.get_gpu_ids())}
        if weights_file is not None:  # (file name, bytes): the identity keeps name and hash
            path = work / "weights" / weights_file[0]
            path.parent.mkdir()
            path.write_bytes(weights_file[1])
            job["weights"] = str(path)
        out = _run_one(job)
        if not out.get("failed") and not out.get("reused"):
            out["files"] = folder_files(out["run_folder"])
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_workers(ray, shipped: bool) -> str:
    """Run `worker_info` once on the cluster; a clear error when a node cannot run hw2lib or runs
    another torch/Python than the driver (other numbers). Returns the worker's hw2lib file."""
    here = worker_info()
    try:
        there = ray.get(ray.remote(worker_info).options(max_retries=0, num_cpus=0).remote())
    except Exception as exc:  # noqa: BLE001 - whatever the node lacks, say what it needs
        code = ("hw2lib itself is shipped with the job" if shipped else
                "and hw2lib: Ray was started by the caller, so ship it there with "
                "ray.init(runtime_env={'py_modules': [<path of hw2lib>]}) or install it")
        raise RuntimeError(
            f"the Ray workers cannot run hw2lib ({type(exc).__name__}: {str(exc)[-300:]}); every "
            f"node needs this Python environment (Python {here['python']}, torch {here['torch']} "
            f"and hw2's dependencies: pip install them there); {code}") from None
    for key in ("python", "torch", "hw2lib"):
        if there[key] != here[key]:
            raise RuntimeError(f"the Ray workers run {key} {there[key]}, this driver {here[key]}: "
                               "install the same environment on every node (numbers differ "
                               "across versions)")
    return there["hw2lib_file"]


def _ray_init(ray, ray_address: str | None) -> bool:
    """Connect to (or start) Ray with hw2lib shipped to every worker (Ray ships local folders per
    job only); False when the caller had already started it (and chose the job's environment)."""
    if ray.is_initialized():
        return False
    import hw2lib

    check_ray_address(ray_address)
    try:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True,
                 runtime_env={"py_modules": [str(Path(hw2lib.__file__).parent)]})
    except ConnectionError as exc:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            raise
        raise ConnectionError(
            f"{exc}. Ray clusters of 2.5x use token authentication (`ray start` enables it where "
            "~/.ray/auth_token exists): set RAY_AUTH_MODE=token here and give this machine the "
            "cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)") from None
    return True


def run_experiments(jobs: list[dict], *, executor: str = "local", gpus_per_run: float = 1.0,
                    ray_address: str | None = None, require_gpu: bool = False) -> list[dict]:
    """Run every job (the keyword arguments of `run_experiment`, `cfg` and `ds` among them);
    results in the jobs' order, failed ones as {"failed": True, "error", ...}. `require_gpu`
    (profile full on "auto"): a Ray cluster without a GPU is an error, not a CPU run."""
    check_executor(executor, gpus_per_run)
    if executor == "local":
        out = []
        for job in jobs:
            print(f"— {_describe(job['cfg'])}", flush=True)
            res = _run_one(job)
            print(_finished_line(job["cfg"], res), flush=True)
            out.append(res)
        return out
    return _run_ray(jobs, gpus_per_run=float(gpus_per_run), ray_address=ray_address,
                    require_gpu=require_gpu)


def _run_ray(jobs: list[dict], *, gpus_per_run: float, ray_address,
             require_gpu: bool = False) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise ImportError("executor='ray' needs Ray: pip install -e '.[ray]'") from None
    import torch

    import hw2lib
    from hw2lib.train.experiment import data_fingerprint

    started = _ray_init(ray, ray_address)
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        options, threads, where = run_resources(nodes, gpus_per_run, torch.get_num_threads(),
                                                require_gpu=require_gpu)
        there = Path(_check_workers(ray, shipped=started)).parent
        code = ("hw2lib shipped with the job" if there != Path(hw2lib.__file__).parent
                else f"hw2lib from {there}")
        remote = ray.remote(_ray_task).options(max_retries=0, **options)
        # each dataset and weights file travels once (the object store), not once per job
        shared: dict = {}
        refs = {}
        for i, job in enumerate(jobs):
            ds, w = job["ds"], job.get("weights")
            if id(ds) not in shared:
                shared[id(ds)] = (ray.put(ds), data_fingerprint(ds))
            if w is not None and w not in shared:
                if not Path(w).is_file():
                    raise FileNotFoundError(f"weights {w!r}: no such file here (the driver sends "
                                            "it to the Ray tasks): give a local state-dict file")
                shared[w] = ray.put((Path(w).name, Path(w).read_bytes()))
            known = {} if job.get("force") else finished_runs(job["run_root"], job["cfg"])
            task_job = {k: v for k, v in job.items() if k not in ("ds", "weights", "run_root")}
            ref = remote.remote({**task_job, "finished": known}, shared[id(ds)][0],
                                shared[id(ds)][1], threads, None if w is None else shared[w])
            refs[ref] = i
        print(f"ray: {len(jobs)} runs on {where} ({code})", flush=True)
        out: list[dict | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs[done[0]]
            try:
                out[i] = _bring_back(ray.get(done[0]), jobs[i]["run_root"])
            except Exception as exc:  # noqa: BLE001 - the task itself died (worker lost, OOM)
                out[i] = _failure(exc, jobs[i]["cfg"])
            print(_finished_line(jobs[i]["cfg"], out[i]), flush=True)
        return out
    finally:
        if started:
            ray.shutdown()


def _bring_back(out: dict, run_root) -> dict:
    """A task's result with its run folder under the driver's `run_root`."""
    if out.get("failed"):
        return out
    dest = Path(run_root) / Path(out["run_folder"]).name
    if "files" in out:
        store_folder(dest, out.pop("files"))
    return {**out, "run_folder": str(dest)}


def split_failed(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(finished results of `run_experiments`, each with its `history`; failed ones). Raises
    `AllRunsFailed` (one line: each failed run and the first error) when no run finished."""
    from hw2lib.train.checkpoints import read_history

    failed = [r for r in results if r.get("failed")]
    if results and len(failed) == len(results):
        names = ", ".join(f"{r['config']['name']} (seed {r['config']['seed']})" for r in failed)
        raise AllRunsFailed(f"all {len(failed)} runs failed: {names}; first error: "
                            f"{failed[0]['error']}")
    done = [{**r, "history": read_history(r["run_folder"])} for r in results if not r.get("failed")]
    return done, failed
