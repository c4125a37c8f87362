"""The executor B and C run their experiment lists through: `local` in process, `ray` as Ray tasks
(tested on the CPU with a local Ray instance: the same results as local, bit for bit), and a
failed run marked failed while the others are kept."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from hw2lib.executor import check_executor, run_experiments, split_failed
from hw2lib.experiment import experiment_config, load_predictions


def _jobs(ds, root, *, broken=False):
    rows = {s: ds.indices(s) for s in ("train", "val", "test")}
    specs = [dict(name="tiny_a", model="resnet18", lr=0.05),
             dict(name="tiny_b", model="resnet18", optimizer="adam", lr=1e-3, augment="d4")]
    if broken:
        specs.insert(1, dict(name="tiny_broken", model="resnet18", lr=0.05, loss="zipf"))
    cfgs = [experiment_config(s, epochs=1, batch_size=8, seed=3) for s in specs]
    return [dict(cfg=c, ds=ds, run_root=root, train_idx=rows["train"], val_idx=rows["val"],
                 test_idx=rows["test"], device="cpu", max_steps=2, progress=False)
            for c in cfgs]


def test_local_executor_keeps_the_others_when_one_run_fails(small_ds, tmp_path, capsys):
    out = run_experiments(_jobs(small_ds, tmp_path, broken=True))
    assert [o.get("failed", False) for o in out] == [False, True, False]
    assert "unknown loss 'zipf'" in out[1]["error"] and out[1]["config"]["name"] == "tiny_broken"
    printed = capsys.readouterr().out
    assert "FAILED tiny_broken (seed 3): ValueError: unknown loss 'zipf'" in printed
    assert printed.count("  run ") == 2  # one line per finished run
    done, failed = split_failed(out)
    assert [d["config"]["name"] for d in done] == ["tiny_a", "tiny_b"]
    assert len(done[0]["history"]) == 1 and failed[0]["config"]["name"] == "tiny_broken"
    with pytest.raises(ValueError, match="unknown executor"):
        check_executor("dask", 1)
    with pytest.raises(ValueError, match="gpus_per_run"):
        check_executor("ray", 0)


@pytest.fixture(scope="module")
def ray_module():
    """Ray, installed from the registry when missing (the optional extra `.[ray]`)."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "ray>=2.9,<3"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.skip(f"Ray is not installed and could not be installed: {proc.stderr[-300:]}")
        importlib.invalidate_caches()
        return importlib.import_module("ray")


def test_ray_executor_equals_local_on_the_cpu(small_ds, tmp_path, ray_module, capsys):
    local = run_experiments(_jobs(small_ds, tmp_path / "local", broken=True))
    ray_module.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_experiments(_jobs(small_ds, tmp_path / "ray", broken=True), executor="ray")
    finally:
        ray_module.shutdown()
    assert "ray: 3 runs on CPU workers" in capsys.readouterr().out
    assert [o.get("failed", False) for o in remote] == [False, True, False]
    assert "unknown loss 'zipf'" in remote[1]["error"]
    for a, b in ((local[0], remote[0]), (local[2], remote[2])):
        assert a["run_id"] == b["run_id"] and a["identity"] == b["identity"]
        for key in ("val_acc", "test_acc", "val_bal_acc", "params", "epochs_run"):
            assert a[key] == b[key], key
        pa, pb = load_predictions(a["run_dir"]), load_predictions(b["run_dir"])
        for k in pa:
            assert np.array_equal(pa[k], pb[k]), k  # bit for bit
