"""`hw2 bench train`: several models and variants in one run, and packing, on a tiny synthetic
ImageFolder with one timed step (a check that it runs and reports, not a measurement)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_train, estimate
from hw2lib.report.plan import plan
from tests.conftest import write_imagefolder


def test_bench_train_models_variants_and_packing(tmp_path, capsys):
    root = write_imagefolder(tmp_path / "images", ("a", "b", "c"), per_class=12, size=64)
    out = tmp_path / "train.json"
    rc = bench_train.main(["--models", "resnet18", "resnet18:small@48", "--variants", "fp32",
                           "bf16", "--modes", "raw", "fast", "--batches", "1", "--warmup", "0",
                           "--batch-size", "4", "--pack", "1", "2", "--image-folder", str(root),
                           "--data-dir", str(tmp_path / "data"), "--device", "cpu",
                           "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    got = [(r["model"], r["stem"], r["size"], r["variant"]) for r in res["table"]]
    assert got == [("resnet18", "imagenet", 64, "fp32"), ("resnet18", "imagenet", 64, "bf16"),
                   ("resnet18", "small", 48, "fp32"), ("resnet18", "small", 48, "bf16")]
    for r in res["table"]:
        assert set(r["results"]) == {"raw", "fast"}
        assert r["results"]["raw"]["images_per_s"] > 0 and r["results"]["fast"]["vs_raw"] > 0
    assert [p["copies"] for p in res["pack"]] == [1, 2]
    for pack in res["pack"]:
        assert len(pack["rates"]) == pack["copies"] and all(r > 0 for r in pack["rates"])
        assert pack["gain"] == sum(pack["rates"]) / pack["one_images_per_s"]
    assert "packing 2 × resnet18:imagenet (bf16, raw steps)" in capsys.readouterr().out
    assert bench_train.parse_model("resnet50@224") == ("resnet50", "imagenet", 224)
    assert bench_train.main(["--pack", "-1"]) == 2


# --------------------------------------------------------------------------- plan --time estimates


def _fake_probe(seen):
    def probe(cfg, *, device, image_size):
        seen.append(tuple(cfg[k] for k in estimate.PROBE_KEYS))
        return {"train_img_s": 100.0, "val_s_per_image": 1 / 400, "overhead_s_per_epoch": 0.5,
                "checkpoint_write_s": 2.0, "eval_img_s": 50.0 if cfg["tta"] else 400.0}
    return probe


def test_estimate_one_probe_per_recipe_key_and_the_formula():
    rows = plan("smoke", ["B-ablation"])
    seen = []
    info = estimate.estimate(rows, device="cpu", progress=lambda *_: None,
                             probe=_fake_probe(seen))
    assert len(seen) == len(set(seen)) == len(info["probes"]) == 3  # 6 trainings, 3 recipes
    for r in rows:
        final = (r["n_val"] + r["n_test"]) / (50.0 if r["tta"] else 400.0)
        epoch_s = r["image_steps"] / 100 / r["epochs"] + r["n_val"] / 400 + 0.5
        writes = r["epochs"] * 2.0  # smoke: 1 epoch, written once
        assert r["est_seconds"] == pytest.approx(r["epochs"] * epoch_s + writes + final)
        assert r["probe"]["model"] == r["model"] and r["probe"]["mix"] == r["mix"]
    # rates measured elsewhere (hw2 doctor) are used instead of probing
    again = []
    rates = {tuple(p[k] for k in estimate.PROBE_KEYS): p for p in info["probes"]}
    estimate.estimate(rows, device="cpu", progress=lambda *_: None, probe=_fake_probe(again),
                      rates=rates)
    assert again == []
    serial = sum(r["est_seconds"] for r in rows)
    assert estimate.total_time(rows)["seconds"] == pytest.approx(serial)
    ray = estimate.total_time(rows, executor="ray", gpus=2, gpus_per_run=0.25)
    assert ray["concurrent"] == 8 and ray["seconds"] == pytest.approx(serial / 8)
    packed = estimate.total_time(rows, executor="ray", gpus=2, gpus_per_run=0.25, pack_gain=1.5)
    assert packed["seconds"] == pytest.approx(serial / 3)  # 2 GPUs × the measured 1.5× gain


def test_checkpoint_writes_follow_fits_cadence():
    """A checkpoint is written after the first and the last epoch and at most once a minute
    between (not every epoch, as the estimate used to charge: +0.7–1 h over full's plan)."""
    assert estimate.checkpoint_writes(1, 5.0) == 1 and estimate.checkpoint_writes(2, 5.0) == 2
    assert estimate.checkpoint_writes(100, 5.0, every=60) == 2 + 99 * 5 // 60  # 10 writes
    assert estimate.checkpoint_writes(100, 120.0, every=60) == 100  # slow epochs: every one
    assert estimate.checkpoint_writes(10, 5.0, every=0) == 10
    row = {"image_steps": 100 * 1000, "epochs": 100, "n_val": 0, "n_test": 0}
    pr = {"train_img_s": 200.0, "val_s_per_image": 0.0, "overhead_s_per_epoch": 0.0,
          "checkpoint_write_s": 3.0, "eval_img_s": 1.0}
    assert estimate.row_seconds(row, pr) == pytest.approx(500 + 3.0 * (2 + 99 * 5 // 60))
    assert "{every:g}" in estimate.OVERHEAD_MODEL


def test_probe_runs_fit_with_the_recipe(monkeypatch):
    """The probe trains through fit with the row's augmentation, mixing, EMA and a run folder,
    evaluates with TTA where the recipe has it — not a bare step on one batch."""
    from hw2lib.train import engine as E

    calls, real_fit, tta = [], E.fit, []
    real_tta = E.predict_tta

    def spy(model, data, recipe, **kw):
        calls.append((*data, recipe))
        hist = real_fit(model, data, recipe, **kw)
        assert (Path(kw["out_dir"]) / "last.pt").exists()  # checkpoints written inside the probe
        return hist

    monkeypatch.setattr(E, "fit", spy)
    monkeypatch.setattr(E, "predict_tta", lambda *a, **k: tta.append(1) or real_tta(*a, **k))
    best = next(r for r in plan("smoke", ["B-ablation"]) if r["mix"] != "none")
    cfg = estimate._probe_cfg(best, 16)
    res = estimate.probe_recipe(cfg, device="cpu", steps=1, batch_size=4, val_images=8,
                                image_size=16)
    (train, val, recipe), = calls
    assert (train.augment, recipe.mix, recipe.ema, recipe.epochs) == ("d4", "both", 0.999, 2)
    assert train.drop_last and len(train) == 1 and recipe.schedule == "onecycle"
    assert tta == [1] and res["precision"] == "fp32"  # the suite pins fp32 (conftest)
    for k in ("train_img_s", "eval_img_s"):
        assert res[k] > 0
    assert res["val_s_per_image"] >= 0 and res["overhead_s_per_epoch"] >= 0
    assert res["checkpoint_write_s"] > 0 and res["eval_batch"] == 4  # the CPU's: the training's


def test_plan_time_prints_the_estimate(tmp_path, monkeypatch, capsys):
    from hw2lib.cli import main

    monkeypatch.setattr(estimate, "probe_recipe", _fake_probe([]))
    path = tmp_path / "plan.json"
    assert main(["plan", "--profile", "smoke", "--only", "B-ablation", "--time", "--device",
                 "cpu", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "estimated time on cpu:" in out and "one after another" in out
    res = json.loads(path.read_text())
    assert res["time"]["serial_seconds"] == pytest.approx(
        sum(r["est_seconds"] for r in res["trainings"]))
    assert len(res["time"]["probes"]) == 3


def test_bench_train_textbook_has_no_tail_batch_and_shows_the_cpu_precision(tmp_path, capsys):
    root = write_imagefolder(tmp_path / "images", ("a", "b", "c"), per_class=12, size=64)
    out = tmp_path / "train.json"
    # 21 training images in batches of 4: an epoch ends in a 1-image tail without drop_last
    assert bench_train.main(["--models", "resnet18", "--modes", "textbook", "--workers", "0",
                             "--batches", "12", "--warmup", "0", "--batch-size", "4",
                             "--image-folder", str(root), "--data-dir", str(tmp_path / "data"),
                             "--device", "cpu", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["table"][0]["results"]["textbook"]["images"] == 12 * 4
    assert res["cpu_precision"] == {"precision": "fp32", "channels_last": False, "source": "env",
                                    "env": "HW2_CPU_PRECISION"}
    assert "CPU precision: fp32 (set by $HW2_CPU_PRECISION)" in capsys.readouterr().out
    line = bench_train.describe_cpu_choice(
        {"precision": "bf16", "source": "cache", "cache": "/c/cpu_probe.json", "model": "resnet18",
         "batch_size": 16, "size": 64, "fp32_img_s": 60.0, "bf16_img_s": 96.0, "speedup": 1.6,
         "min_gain": 1.15})
    assert line == ("CPU precision: bf16 — probe (resnet18, batch 16, 64 px): fp32 60.0 img/s, "
                    "bf16 96.0 img/s (1.60×; bf16 needs ≥ 1.15×), cache /c/cpu_probe.json")
    cl = bench_train.describe_cpu_choice(
        {"precision": "bf16", "source": "probe", "cache": "/c/cpu_probe.json", "model": "resnet18",
         "batch_size": 16, "size": 64, "fp32_img_s": 60.0, "bf16_img_s": 96.0, "speedup": 1.6,
         "min_gain": 1.15, "channels_last": True, "bf16_cl_img_s": 104.0, "cl_median": 1.08,
         "cl_gain": 1.05})
    assert cl.endswith("; channels_last 104.0 img/s (1.08× the plain layout; needs ≥ 1.05×): "
                       "used")
