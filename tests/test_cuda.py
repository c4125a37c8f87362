"""The CUDA path (bf16 autocast, channels_last, data and augmentation on the device, resume on
the GPU, the best recipe's levers there). Skipped without a GPU; run on one with
`pytest -m cuda`."""

from __future__ import annotations

import pytest
import torch

from hw2lib import data as D
from hw2lib import engine as E
from hw2lib.models import build_model
from tests.test_engine import CrashAfter

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _data(n=64, classes=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = (torch.rand(n, 3, size, size, generator=g) * 80 + y.view(-1, 1, 1, 1) * 40).to(
        torch.uint8)
    return x, y


def test_loader_keeps_data_and_augments_on_the_device():
    x, y = _data()
    loader = D.BatchLoader(x, y, 16, shuffle=True, augment="d4", device="cuda", seed=1)
    assert loader._x.is_cuda  # the uint8 cache moved once
    xb, yb = next(iter(loader))
    assert xb.is_cuda and yb.is_cuda and xb.dtype == torch.float32
    cpu = next(iter(D.BatchLoader(x, y, 16, shuffle=True, augment="d4", device="cpu", seed=1)))[0]
    torch.testing.assert_close(xb.cpu(), cpu, atol=1e-5, rtol=1e-5)  # same draws, same batch


def test_fit_uses_bf16_autocast_and_channels_last(tmp_path):
    x, y = _data()
    train = D.BatchLoader(x, y, 16, shuffle=True, augment="basic", device="cuda", seed=0)
    val = D.BatchLoader(x, y, 32, device="cuda")
    model = build_model("resnet18", 4)
    hist = E.fit(model, train, val, epochs=2, lr=0.05, device="cuda", out_dir=tmp_path,
                 progress=False)
    assert len(hist) == 2 and all(h["val_acc"] is not None for h in hist)
    assert E._is_channels_last(model)
    run = (tmp_path / "run.json").read_text()
    assert '"amp": "bf16"' in run and '"channels_last": true' in run
    logits, targets = E.predict(model, val)
    assert logits.dtype == torch.float32 and logits.shape == (64, 4) and not logits.is_cuda


def test_resume_on_the_gpu_equals_an_uninterrupted_run_within_bf16(tmp_path):
    x, y = _data()

    def loaders(seed):
        return (D.BatchLoader(x, y, 16, shuffle=True, augment="d4", device="cuda", seed=seed),
                D.BatchLoader(x, y, 32, device="cuda"))

    kw = dict(epochs=3, lr=0.05, device="cuda", progress=False, schedule="onecycle",
              warmup_epochs=1, mix="both", ema=0.9)
    torch.manual_seed(0)
    straight = E.fit(build_model("resnet18", 4), *loaders(3), out_dir=tmp_path / "a", **kw)
    torch.manual_seed(0)
    train, val = loaders(3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        E.fit(build_model("resnet18", 4), CrashAfter(train, 1), val, out_dir=tmp_path / "b",
              **kw)
    torch.manual_seed(5)
    resumed = E.fit(build_model("resnet18", 4), *loaders(99), out_dir=tmp_path / "b",
                    resume=True, **kw)
    for a, b in zip(straight, resumed, strict=True):
        assert a["lr"] == b["lr"]
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05 * max(1.0, a["train_loss"])
        assert abs(a["val_acc"] - b["val_acc"]) <= 0.1


def test_tta_on_the_gpu_matches_the_cpu_within_bf16():
    x, y = _data(n=16)
    model = build_model("resnet18", 4).eval()
    cpu = E.predict_tta(model, D.BatchLoader(x, y, 8))
    gpu = E.predict_tta(model.cuda(), D.BatchLoader(x, y, 8, device="cuda"))
    torch.testing.assert_close(gpu[0].softmax(1), cpu[0].softmax(1), atol=0.05, rtol=0.05)
