"""`make test` on a GPU box (issue 28): the tests outside the `cuda` marker hold there too. On a GPU
box "auto" is CUDA and training runs in bf16, so a test that trains on the default device gets
other numbers (or compares them with a CPU float32 recompute and fails). `HW2_SIMULATE_GPU_BOX=1`
(tests/conftest.py) gives every test that default while no CUDA device exists: a test that relies
on it fails here. This file runs the tests that train or pick a profile that way, and a canary
that must fail, in a pytest of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The two the issue names, and the others the simulated run of the whole suite found.
PINNED = [
    "tests/test_cpu_probe.py::test_the_precision_is_part_of_the_run_identity",
    "tests/test_experiment.py::test_a_tta_run_keeps_the_plain_forward_beside_the_8_view_average",
    "tests/test_experiment.py::test_same_identity_reuses_and_a_changed_setting_trains_a_new_run",
    "tests/test_experiment.py::test_weights_file_hash_is_part_of_the_identity",
    "tests/test_experiment.py::test_a_corrupt_result_is_trained_again_with_a_warning",
    "tests/test_verdicts.py::test_run_experiment_scores_the_raw_weights_of_an_ema_run",
    "tests/test_engine.py::test_resolve_device_and_run_info",
    "tests/test_run.py::test_auto_profile_is_quick_without_cuda",
    "tests/test_gpu_check.py::test_report_auto_stops_on_an_unusable_gpu_unless_overridden",
]
CANARY = '''
from hw2lib import data as D
from hw2lib.train import experiment as X
from hw2lib.train.recipes import resolve


def test_trains_on_the_default_device(small_ds, tmp_path):
    idx = D.split_indices(small_ds)
    X.run_experiment(resolve({"name": "c"}, epochs=1, seed=0, batch_size=8), small_ds, tmp_path,
                     train_idx=idx["train"], val_idx=idx["val"], test_idx=idx["test"],
                     progress=False)
'''


def _pytest(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HW2_SIMULATE_GPU_BOX": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_tests_that_train_hold_with_a_gpu_boxs_defaults():
    proc = _pytest(*PINNED)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"{len(PINNED)} passed" in proc.stdout


def test_the_simulation_catches_a_test_that_trains_on_the_default_device():
    canary = ROOT / "tests" / "_gpu_box_canary_test.py"
    canary.write_text(CANARY)
    try:
        proc = _pytest(str(canary.relative_to(ROOT)))
    finally:
        canary.unlink()
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-2000:]
