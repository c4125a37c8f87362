"""`hw2 bench train`: several models and variants in one run, and packing, on a tiny synthetic
ImageFolder with one timed step (a check that it runs and reports, not a measurement)."""

from __future__ import annotations

import json

from bench import bench_train
from tests.conftest import write_imagefolder


def test_bench_train_models_variants_and_packing(tmp_path, capsys):
    root = write_imagefolder(tmp_path / "images", ("a", "b", "c"), per_class=12, size=64)
    out = tmp_path / "train.json"
    rc = bench_train.main(["--models", "resnet18", "resnet18:small@48", "--variants", "fp32",
                           "bf16", "--modes", "raw", "fast", "--batches", "1", "--warmup", "0",
                           "--batch-size", "4", "--pack", "2", "--image-folder", str(root),
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
    pack = res["pack"]
    assert pack["copies"] == 2 and len(pack["rates"]) == 2
    assert pack["gain"] == sum(pack["rates"]) / pack["one_images_per_s"]
    assert "packing 2 × resnet18:imagenet (bf16, raw steps)" in capsys.readouterr().out
    assert bench_train.parse_model("resnet50@224") == ("resnet50", "imagenet", 224)
    assert bench_train.main(["--pack", "-1"]) == 2
