"""An existing Ray cluster runs the study: a head started with Ray's own CLI from another
directory and a second node (its own temp dir and working directory) on this machine, reached
through `ray_address`. The tasks read nothing from the driver's disk or working directory (the
driver's dataset paths are relative to a folder the workers do not start in), hw2lib is shipped to
them, and the runs come back to the driver's run folder with the local executor's run ids and
accuracies. The cluster is stopped (its process groups, not every Ray on the machine) whatever
happens."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hw2lib.report.run import RunnerError, plan_parameters


def test_report_parameters_check_the_cluster_before_anything_runs():
    with socket.socket() as s:  # bound, never listening: nothing answers there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(RunnerError, match=rf"^B-ablation: ray_address '127.0.0.1:{port}': "
                                              "nothing answers"):
            plan_parameters("smoke", ["B-ablation"],
                            {"executor": "ray", "ray_address": f"127.0.0.1:{port}"})
    with pytest.raises(RunnerError, match="C-longtail: gpus_per_run must be at most 1"):
        plan_parameters("smoke", ["C-longtail"], {"executor": "ray", "gpus_per_run": 1.5})
    # the local executor never looks at the address
    plan_parameters("smoke", ["B-ablation"], {"ray_address": f"127.0.0.1:{port}"})


def _ray_cli() -> Path | None:
    here = Path(sys.executable).with_name("ray")
    return here if here.exists() else (Path(shutil.which("ray")) if shutil.which("ray") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _auth_env(root: Path) -> dict:
    """Token authentication (Ray 2.5x's default for new clusters) with this cluster's own token
    file: for the nodes and the driver alike, whatever ~/.ray holds or this process set."""
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    # a busy 2-core machine starts a raylet slowly: give it more than Ray's default 30 s
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_raylet_start_wait_time_s": "120"}


class _Node:
    """One `ray start --block` in its own process group, working directory and temp dir."""

    def __init__(self, ray: Path, args: list[str], root: Path, name: str, env: dict):
        self.cwd, self.temp = root / f"{name}-cwd", root / f"{name}-tmp"
        self.cwd.mkdir()
        self.log = root / f"{name}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(ray), "start", "--block", "--num-cpus", "2", "--num-gpus", "0",
                 "--temp-dir", str(self.temp), "--disable-usage-stats", *args],
                cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=env)

    def wait_started(self, timeout: float = 150) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"ray start ({self.cwd.name}) did not start: "
                           f"{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                time.sleep(1)  # children of the group exit after the leader
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass


@pytest.fixture
def ray_cli() -> Path:
    ray = _ray_cli()
    if ray is None:
        pytest.skip("Ray's CLI `ray` is not installed (it comes with the dev extra `make test` installs)")
    return ray


# The driver, in a process of its own (Ray's connection state is per process) started in a folder
# the nodes do not start in; its dataset's paths are relative to that folder. It trains the smoke
# ablation's run list with the local executor, then through the cluster.
DRIVER = """
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
from hw2lib import data
from hw2lib.report import run
from hw2lib.study import task_b

ds = data.load_dataset("data", image_folder="images", image_size=32, progress=False)
idx = {t: data.split_indices(ds, train_per_class=6, val_per_class=3, test_per_class=3)
       for t in ("hw2", "best")}
p = {k: v.default for k, v in run.notebook_parameters("B-ablation").items()}
cfgs = task_b.configs({**p, "experiments": ["resnet18", "resnext18", "best"], "seeds": [0],
                       "ablation_seeds": [0], "epochs": 1, "best_epochs": 1, "batch_size": 16})
kw = dict(device="cpu", max_steps=2)
keys = ("run_id", "identity", "val_acc", "test_acc", "val_bal_acc", "test_bal_acc", "run_folder",
        "reused")

def digests(run_dir):  # the saved logits, bit for bit
    with np.load(Path(run_dir) / "predictions.npz") as z:
        return {k: hashlib.sha256(z[k].tobytes()).hexdigest() for k in z.files}

def record(runs):
    return [{**{k: r[k] for k in keys}, "name": r["config"]["name"], "seed": r["config"]["seed"],
             "files": sorted(p.name for p in Path(r["run_folder"]).iterdir()),
             "logits": digests(r["run_folder"]), "epochs": len(r["history"])} for r in runs]

out = {"split_csv": str(ds.split_csv)}
t0 = time.perf_counter()
local, out["local_failed"] = task_b.run_all(cfgs, ds, idx, Path("runs-local"), **kw)
t1 = time.perf_counter()
t2 = time.perf_counter()
remote, out["ray_failed"] = task_b.run_all(cfgs, ds, idx, Path("runs-ray"), executor="ray",
                                           ray_address=Path("address.txt").read_text(), **kw)
out.update(local=record(local), ray=record(remote),
           seconds=[t1 - t0, t2 - t1, time.perf_counter() - t2])
Path("out.json").write_text(json.dumps(out, default=str))
"""


def test_an_existing_cluster_runs_the_smoke_ablation_like_the_local_executor(
        ray_cli, make_imagefolder, tmp_path):
    driver = tmp_path / "driver"
    make_imagefolder(driver / "images", classes=("a", "b", "c"), per_class=12, size=32)
    root = Path(tempfile.mkdtemp(prefix="h2rc", dir="/tmp"))  # short: Ray's socket paths
    env, port, nodes, proc = _auth_env(root), _free_port(), [], None
    try:  # the head from a directory of its own, then a second node: stopped whatever happens
        nodes.append(_Node(ray_cli, ["--head", "--port", str(port), "--include-dashboard",
                                     "false"], root, "head", env))
        nodes[0].wait_started()
        nodes.append(_Node(ray_cli, ["--address", f"127.0.0.1:{port}"], root, "worker", env))
        nodes[1].wait_started()
        (driver / "address.txt").write_text(f"127.0.0.1:{port}")
        proc = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=driver, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for node in reversed(nodes):
            node.stop()
        node_cwds = [n.cwd for n in nodes]
        leftovers = {c: sorted(p.name for p in c.iterdir()) for c in node_cwds}
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads((driver / "out.json").read_text())
    # the tasks could not have read the split file: it is relative to the driver's folder only
    assert not Path(out["split_csv"]).is_absolute()
    assert (driver / out["split_csv"]).exists() and len(node_cwds) == 2
    assert "ray: 3 runs on CPU workers, 2 thread(s) per run (hw2lib shipped with the job)" \
        in stdout
    assert out["local_failed"] == [] and out["ray_failed"] == [], out["ray_failed"]
    assert [(r["name"], r["seed"]) for r in out["local"]] == [
        ("resnet18", 0), ("resnext18", 0), ("best", 0)]
    for a, b in zip(out["local"], out["ray"], strict=True):
        assert a["run_id"] == b["run_id"] and a["identity"] == b["identity"], a["name"]
        for k in ("val_acc", "test_acc", "val_bal_acc", "test_bal_acc"):
            assert a[k] == b[k], (a["name"], k)
        # the run folder came back to the driver: the same files as a local run
        assert Path(b["run_folder"]).parent == Path("runs-ray") and not b["reused"]
        assert a["files"] == b["files"] and b["epochs"] == 1
        assert a["logits"] == b["logits"] and "test_logits" in b["logits"], a["name"]
    assert leftovers == {c: [] for c in node_cwds}  # nothing written where the nodes run
    print("seconds local / - / ray:", out["seconds"])
