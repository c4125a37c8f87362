"""The executor B and C run their experiment lists through: `local` in process, `ray` as Ray tasks
(tested on the CPU with a local Ray instance: the same results as local, bit for bit), and a
failed run marked failed while the others are kept."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from hw2lib.train.executor import (
    AllRunsFailed,
    check_executor,
    check_ray_address,
    folder_files,
    parse_ray_address,
    run_experiments,
    run_resources,
    runs_per_node,
    split_failed,
    store_folder,
)
from hw2lib.train.experiment import load_predictions
from hw2lib.train.recipes import resolve


def _jobs(ds, root, *, broken=False):
    rows = {s: ds.indices(s) for s in ("train", "val", "test")}
    specs = [dict(name="tiny_a", model="resnet18", lr=0.05),
             dict(name="tiny_b", model="resnet18", optimizer="adam", lr=1e-3, augment="d4")]
    if broken:
        specs.insert(1, dict(name="tiny_broken", model="resnet18", lr=0.05, loss="zipf"))
    cfgs = [resolve(s, epochs=1, batch_size=8, seed=3) for s in specs]
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
def ray_local():
    """A Ray instance started here (2 CPUs, num_gpus=0: on a GPU box too the tasks run, and are
    said to run, on CPU workers). Ray is in the `dev` extra (`make test` installs it); missing,
    the Ray tests are skipped — never installed from here."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: it comes with the dev extra that `make test` installs")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_equals_local_on_the_cpu(small_ds, tmp_path, ray_local, capsys):
    local = run_experiments(_jobs(small_ds, tmp_path / "local", broken=True))
    remote = run_experiments(_jobs(small_ds, tmp_path / "ray", broken=True), executor="ray")
    assert "ray: 3 runs on CPU workers" in capsys.readouterr().out
    assert [o.get("failed", False) for o in remote] == [False, True, False]
    assert "unknown loss 'zipf'" in remote[1]["error"]
    for a, b in ((local[0], remote[0]), (local[2], remote[2])):
        assert a["run_id"] == b["run_id"] and a["identity"] == b["identity"]
        for key in ("val_acc", "test_acc", "val_bal_acc", "params", "epochs_run"):
            assert a[key] == b[key], key
        pa, pb = load_predictions(a["run_folder"]), load_predictions(b["run_folder"])
        for k in pa:
            assert np.array_equal(pa[k], pb[k]), k  # bit for bit
        # the task's folder came back to the driver's run_root: the same files as a local run
        ra, rb = Path(a["run_folder"]), Path(b["run_folder"])
        assert rb.parent == tmp_path / "ray" and ra.name == rb.name
        assert sorted(p.name for p in ra.iterdir()) == sorted(p.name for p in rb.iterdir())
        assert (ra / "identity.json").read_bytes() == (rb / "identity.json").read_bytes()


def test_ray_executor_reuses_the_drivers_finished_runs(small_ds, tmp_path, ray_local, capsys):
    first = run_experiments(_jobs(small_ds, tmp_path))
    again = run_experiments(_jobs(small_ds, tmp_path), executor="ray")
    forced = run_experiments([{**j, "force": True} for j in _jobs(small_ds, tmp_path)],
                             executor="ray")
    assert [o["reused"] for o in again] == [True, True]
    assert [o["run_folder"] for o in again] == [o["run_folder"] for o in first]
    assert [o["reused"] for o in forced] == [False, False]
    assert [o["test_acc"] for o in forced] == [o["test_acc"] for o in first]
    assert capsys.readouterr().out.count("(reused)") == 2


def test_gpus_per_run_is_a_share_of_one_gpu_or_whole_gpus():
    for ok in (0.25, 0.5, 1, 2, 4.0):
        check_executor("ray", ok)
    with pytest.raises(ValueError, match=r"at most 1 .* whole number of GPUs; got 1.5.*use 1 or 2"):
        check_executor("ray", 1.5)


def test_packed_runs_share_a_nodes_cores_and_cpu_runs_use_the_drivers_threads():
    one_gpu = [{"CPU": 16.0, "GPU": 1.0}]
    assert runs_per_node(1, 0.25) == 4 and runs_per_node(2, 0.3) == 6 and runs_per_node(3, 2) == 1
    opts, threads, where = run_resources(one_gpu, 0.25, driver_threads=16)
    assert (opts, threads) == ({"num_gpus": 0.25, "num_cpus": 4}, 4)  # 16 cores ÷ 4 runs
    assert where == "1 GPU(s), 0.25 per run, 4 CPU thread(s) per run"
    opts, threads, _ = run_resources([{"CPU": 8, "GPU": 2}, {"CPU": 4, "GPU": 1}], 1, 2)
    assert threads == 4 and opts["num_cpus"] == 4  # the tightest GPU node decides
    with pytest.raises(ValueError, match="gpus_per_run=2 is more than any node has"):
        run_resources(one_gpu, 2, 2)
    opts, threads, where = run_resources([{"CPU": 2.0}, {"CPU": 4.0}], 0.25, driver_threads=3)
    assert (opts, threads, where) == ({"num_cpus": 3}, 3, "CPU workers, 3 thread(s) per run")
    assert run_resources([{"CPU": 2.0}], 1, driver_threads=8)[1] == 2  # at most a node's cores


def test_a_ray_task_resolves_its_own_device_and_threads(monkeypatch, small_ds, tmp_path):
    """The notebook's device is not the task's: a task Ray gave a GPU trains on "cuda", one
    without on the CPU; it sets its torch threads and trains in a folder of its own node."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: it comes with the dev extra that `make test` installs")
    import torch

    from hw2lib.train import executor

    seen = []

    def fake_run(**job):
        seen.append((job["device"], torch.get_num_threads(), job["run_root"], job["fingerprint"],
                     job.get("weights") and (Path(job["weights"]).name,
                                             Path(job["weights"]).read_bytes())))
        return {"failed": True, "error": "stop here", "config": job["cfg"]}

    monkeypatch.setattr("hw2lib.train.experiment.run_experiment", fake_run)
    job = {k: v for k, v in _jobs(small_ds, tmp_path)[0].items() if k not in ("ds", "run_root")}
    job["device"] = "cpu"  # what the notebook resolved
    before = torch.get_num_threads()
    try:
        for gpu_ids, want in (([0], "cuda"), ([], "cpu")):
            monkeypatch.setattr(ray, "get_gpu_ids", lambda ids=gpu_ids: ids)
            executor._ray_task(job, small_ds, {"fp": 1}, 1, None)
            assert seen[-1][:2] == (want, 1) and seen[-1][3] == {"fp": 1}
            assert not Path(seen[-1][2]).exists() and tmp_path not in Path(seen[-1][2]).parents
        # a local weights file travels as (name, bytes): the run's identity keeps both
        executor._ray_task(job, small_ds, {"fp": 1}, 1, ("r18.pth", b"state"))
        assert seen[-1][4] == ("r18.pth", b"state") and not Path(seen[-1][2]).exists()
    finally:
        torch.set_num_threads(before)
    assert executor.task_device([]) == "cpu" and executor.task_device([1]) == "cuda"


def test_ray_address_is_checked_before_anything_runs():
    assert parse_ray_address("ray://head.example:10001") == ("head.example", 10001)
    assert parse_ray_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert parse_ray_address("auto") is None
    check_ray_address(None)
    with pytest.raises(ValueError, match="'head:port' is not an address: give host:port"):
        check_ray_address("head:port")
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=rf"nothing answers at 127.0.0.1:{port} .*ray start"):
            check_ray_address(f"127.0.0.1:{port}", timeout=2)
    with socket.create_server(("127.0.0.1", 0)) as server:
        check_ray_address(f"127.0.0.1:{server.getsockname()[1]}")


def test_all_runs_failed_is_one_line_naming_them():
    cfg = {"name": "resnext18", "seed": 0}
    failed = [{"failed": True, "error": "FileNotFoundError: x.csv", "config": cfg},
              {"failed": True, "error": "OSError: y", "config": {**cfg, "seed": 1}}]
    with pytest.raises(AllRunsFailed) as info:
        split_failed(failed)
    assert str(info.value) == ("all 2 runs failed: resnext18 (seed 0), resnext18 (seed 1); "
                               "first error: FileNotFoundError: x.csv")
    assert split_failed([]) == ([], [])


def test_a_returned_run_folder_replaces_the_old_one_whole(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text("{}")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    files = folder_files(src)
    assert files == {"a.json": b"{}", "sub/b.bin": b"\x00\x01"}
    dest = tmp_path / "runs" / "r-s0-1234abcd"
    dest.mkdir(parents=True)
    (dest / "last.pt").write_bytes(b"interrupted")
    store_folder(dest, files)
    assert folder_files(dest) == files and sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_a_refused_connection_names_token_authentication(monkeypatch):
    from types import SimpleNamespace

    from hw2lib.train import executor

    def refuse(**kw):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")

    fake = SimpleNamespace(is_initialized=lambda: False, init=refuse)
    monkeypatch.setattr(executor, "check_ray_address", lambda address: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(ConnectionError, match=r"10.0.0.5:6379\. .*set RAY_AUTH_MODE=token here"):
        executor._ray_init(fake, "10.0.0.5:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: Ray's own message only
    with pytest.raises(ConnectionError, match=r"^Failed to connect to Ray cluster at [\d.:]+$"):
        executor._ray_init(fake, "10.0.0.5:6379")


def test_a_notebooks_set_up_checks_the_ray_address_before_any_folder_or_data(tmp_path):
    """A plain papermill / JupyterLab run of B or C used to read the data first and fail at the
    executor: the set-up call now stops in one line, before its run folder exists."""
    import socket

    from hw2lib.study import notebook

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match=f"nothing answers at 127.0.0.1:{port}"):
        notebook.setup(run_dir, seed=0, executor="ray", ray_address=f"127.0.0.1:{port}",
                       data_dir=tmp_path / "no-data")
    with pytest.raises(ValueError, match="gpus_per_run"):
        notebook.setup(run_dir, seed=0, executor="ray", gpus_per_run=1.5,
                       data_dir=tmp_path / "no-data")
    assert not run_dir.exists() and not (tmp_path / "no-data").exists()
