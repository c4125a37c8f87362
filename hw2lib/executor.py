"""One executor for a list of experiments: `local` (in this process, one after another: the
default, and what the tests use) or `ray` (each experiment a Ray task with a share of a GPU, on
this machine's GPUs or on an existing cluster at `ray_address`).

Both call `experiment.run_experiment` with the same arguments, so the run folders and results are
the same (on the CPU bit for bit: a Ray task uses as many torch threads as the driver). A run that
raises is recorded as failed (its error kept) and the others go on; Ctrl-C stops everything.
One line is printed per finished run, readable under papermill. The run folders must be on a
file system every Ray worker sees (the same machine, or a shared disk on a cluster).
"""

from __future__ import annotations

import traceback

EXECUTORS = ("local", "ray")


def _describe(cfg: dict) -> str:
    return (f"{cfg['name']} (seed {cfg['seed']}): {cfg['model']}, {cfg['optimizer']} "
            f"lr {cfg['lr']:g}, {cfg['schedule']}, {cfg['epochs']} ep")


def _finished_line(cfg: dict, out: dict) -> str:
    if out.get("failed"):
        return f"  FAILED {cfg['name']} (seed {cfg['seed']}): {out['error']}"
    return (f"  run {out['run_id']} {cfg['name']} (seed {cfg['seed']}): val {out['val_acc']:.4f}, "
            f"test {out['test_acc']:.4f}{' (reused)' if out['reused'] else ''}")


def _run_one(job: dict, threads: int | None = None, ds=None) -> dict:
    """run_experiment(**job) (with `ds` when given: Ray resolves only top-level object refs), a
    failure returned as {"failed": True, "error", "traceback", "config"}."""
    from hw2lib.experiment import run_experiment

    if ds is not None:
        job = {**job, "ds": ds}
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        return run_experiment(**job)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the others
        return {"failed": True, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "config": job["cfg"]}


def check_executor(executor: str, gpus_per_run: float) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    if not float(gpus_per_run) > 0:
        raise ValueError(f"gpus_per_run must be > 0, got {gpus_per_run!r}")


def run_experiments(jobs: list[dict], *, executor: str = "local", gpus_per_run: float = 1.0,
                    ray_address: str | None = None) -> list[dict]:
    """Run every job (the keyword arguments of `run_experiment`, `cfg` and `ds` among them);
    results in the jobs' order, failed ones as {"failed": True, "error", ...}."""
    check_executor(executor, gpus_per_run)
    if executor == "local":
        out = []
        for job in jobs:
            print(f"— {_describe(job['cfg'])}", flush=True)
            res = _run_one(job)
            print(_finished_line(job["cfg"], res), flush=True)
            out.append(res)
        return out
    return _run_ray(jobs, gpus_per_run=float(gpus_per_run), ray_address=ray_address)


def _run_ray(jobs: list[dict], *, gpus_per_run: float, ray_address) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise ImportError("executor='ray' needs Ray: pip install -e '.[ray]'") from None
    import torch

    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        options = {"num_gpus": gpus_per_run} if gpus else {"num_cpus": 1}
        remote = ray.remote(_run_one).options(max_retries=0, **options)
        threads = torch.get_num_threads()
        # the dataset travels once (the object store), not once per job
        shared = {}
        for job in jobs:
            key = id(job["ds"])
            if key not in shared:
                shared[key] = ray.put(job["ds"])
        refs = {remote.remote({k: v for k, v in job.items() if k != "ds"}, threads,
                              shared[id(job["ds"])]): i
                for i, job in enumerate(jobs)}
        where = f"{gpus:g} GPU(s), {gpus_per_run:g} per run" if gpus else "CPU workers"
        print(f"ray: {len(jobs)} runs on {where}", flush=True)
        out: list[dict | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = refs[done[0]]
            try:
                out[i] = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - the task itself died (worker lost, OOM)
                out[i] = {"failed": True, "error": f"{type(exc).__name__}: {exc}",
                          "config": jobs[i]["cfg"]}
            print(_finished_line(jobs[i]["cfg"], out[i]), flush=True)
        return out
    finally:
        if started:
            ray.shutdown()


def split_failed(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(finished results of `run_experiments`, each with its `history`; failed ones)."""
    from hw2lib.engine import read_history

    done = [{**r, "history": read_history(r["run_dir"])} for r in results if not r.get("failed")]
    return done, [r for r in results if r.get("failed")]
