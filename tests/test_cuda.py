"""The CUDA path (bf16 autocast, channels_last, data and augmentation on the device, resume on
the GPU, the best recipe's levers there). Skipped without a GPU; run on one with
`pytest -m cuda`."""

from __future__ import annotations

import json

import pytest
import torch

from hw2lib import data as D
from hw2lib.core import runtime as R
from hw2lib.nets.hooks import capture
from hw2lib.nets.models import build_model
from hw2lib.train import engine as E
from hw2lib.train import schedules as S
from tests.nets import CrashAfter, RecordsBenchmarkFlag, fit

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
    with capture(model, "layer1.0.conv1") as cap:  # the last step's activations, seen by a hook
        hist = fit(model, train, val, epochs=2, lr=0.05, device="cuda", out_dir=tmp_path,
                   progress=False)
    assert cap.output.dtype == torch.bfloat16  # autocast ran inside fit's steps
    assert cap.output.is_contiguous(memory_format=torch.channels_last)
    assert len(hist) == 2 and all(h["val_acc"] is not None for h in hist)
    assert R.is_channels_last(model)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["amp"] == "bf16" and run["channels_last"] is True
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
    straight = fit(build_model("resnet18", 4), *loaders(3), out_dir=tmp_path / "a", **kw)
    torch.manual_seed(0)
    train, val = loaders(3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(build_model("resnet18", 4), CrashAfter(train, 1), val, out_dir=tmp_path / "b",
              **kw)
    torch.manual_seed(5)
    resumed = fit(build_model("resnet18", 4), *loaders(99), out_dir=tmp_path / "b",
                    **kw)
    # the same batches and draws (the RNG states resume); only cuDNN's kernel choice may differ
    for a, b in zip(straight, resumed, strict=True):
        assert a["lr"] == b["lr"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.01)
        assert abs(a["val_acc"] - b["val_acc"]) <= 2 / 64 + 1e-9  # at most two of 64 images


def test_tta_on_the_gpu_matches_the_cpu_within_bf16():
    x, y = _data(n=16)
    model = build_model("resnet18", 4).eval()
    cpu = E.predict_tta(model, D.BatchLoader(x, y, 8))
    gpu = E.predict_tta(model.cuda(), D.BatchLoader(x, y, 8, device="cuda"))
    torch.testing.assert_close(gpu[0].softmax(1), cpu[0].softmax(1), atol=0.05, rtol=0.05)


# --------------------------------------------------------------------------- issue 19, items 3-7, 10


def test_an_epoch_of_training_steps_never_waits_for_the_gpu():
    """Sync-debug mode "error" around a whole epoch of steps: the loader's colour jitter (its
    draws and their copy included), mixup/CutMix, bf16 autocast, the fused optimizer, the EMA."""
    from hw2lib.nets.nn_utils import keep_head_fp32
    from hw2lib.train.ema import EMA
    from hw2lib.train.mixing import Mixer

    x, y = _data()
    dev = torch.device("cuda")
    loader = D.BatchLoader(x, y, 16, shuffle=True, augment="color", device=dev, seed=0,
                           drop_last=True)
    model = build_model("resnet18", 4).to(dev).to(memory_format=torch.channels_last)
    keep_head_fp32(model)
    opt = S.build_optimizer("sgd", model.parameters(), lr=0.05, device=dev)
    assert opt.defaults["fused"] is True
    ema = EMA(model, 0.9)
    mixer = Mixer("both", 1.0, loader.generator, batches=len(loader))
    crit = torch.nn.CrossEntropyLoss()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for xb, yb in loader:
            E.train_step(model, crit, opt, xb, yb, dev, amp=True, channels_last=True, mix=mixer)
            ema.update()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_evaluation_syncs_at_the_end_not_per_batch():
    import warnings

    x, y = _data()
    model = build_model("resnet18", 4).cuda()
    loader = D.BatchLoader(x, y, 8, device="cuda")  # 8 batches
    expected = E.evaluate(model, loader)  # warm-up
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            got = E.evaluate(model, loader)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= 3, syncs  # targets, predictions, loss: once each
    assert got["acc"] == expected["acc"]


def test_channels_last_is_chosen_per_model_and_survives_mixing():
    from hw2lib.nets.hooks import capture

    x, y = _data()
    for name, want in (("resnet18", True), ("resnext18", False)):
        model = build_model(name, 4)
        train = D.BatchLoader(x, y, 16, shuffle=True, augment="basic", device="cuda", seed=0)
        with capture(model, "conv1", what="input", detach=True) as first:
            fit(model, train, None, epochs=1, lr=0.05, device="cuda", progress=False,
                model=name, mix="mixup", mix_alpha=1.0)
        assert R.is_channels_last(model) is want, name
        xb = first.output  # the last training step's (mixed) input
        assert (xb.is_contiguous(memory_format=torch.channels_last)
                and not xb.is_contiguous()) is want, name


def test_autocast_runs_and_the_head_stays_fp32_on_cuda():
    from hw2lib.nets.hooks import capture
    from hw2lib.nets.nn_utils import Fp32Linear

    x, y = _data(n=16)
    model = build_model("resnet18", 4).cuda()
    with capture(model, "layer1", detach=True) as body, capture(model, "fc", detach=True) as head:
        logits, _ = E.predict(model, D.BatchLoader(x, y, 8, device="cuda"))
    assert body.output.dtype == torch.bfloat16  # autocast really ran
    assert head.output.dtype == torch.float32 and type(model.fc) is Fp32Linear
    assert not torch.equal(logits, logits.bfloat16().float())  # logits not bf16-rounded


def test_fit_turns_cudnn_benchmark_on_for_its_duration():
    x, y = _data()
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        train = RecordsBenchmarkFlag(
            D.BatchLoader(x, y, 16, shuffle=True, augment="basic", device="cuda", seed=0))
        fit(build_model("resnet18", 4), train, None, epochs=2, lr=0.05, device="cuda",
              progress=False)
        assert train.flags == [True, True] and torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def test_loader_colour_and_resize_on_the_gpu_match_the_cpu():
    x, y = _data()
    for kw in (dict(augment="color"), dict(augment="d4", resize=48)):
        gpu = D.BatchLoader(x, y, 16, shuffle=True, device="cuda", seed=4, **kw)
        cpu = D.BatchLoader(x, y, 16, shuffle=True, device="cpu", seed=4, **kw)
        for (a, ya), (b, yb) in zip(gpu, cpu, strict=True):
            assert torch.equal(ya.cpu(), yb)
            torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)


def test_a_gpu_written_checkpoint_loads_and_resumes_on_the_cpu(tmp_path):
    x, y = _data()
    kw = dict(lr=0.01, optimizer="adamw", ema=0.9, progress=False, checkpoint_every=0)
    fit(build_model("resnet18", 4),
          D.BatchLoader(x, y, 16, shuffle=True, augment="d4", device="cuda", seed=0), None,
          epochs=1, device="cuda", out_dir=tmp_path, **kw)

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            return [obj]
        if isinstance(obj, dict):
            return [t for v in obj.values() for t in tensors(v)]
        if isinstance(obj, list | tuple):
            return [t for v in obj for t in tensors(v)]
        return []

    for name in ("last.pt", "best.pt"):
        found = tensors(torch.load(tmp_path / name, weights_only=True))  # no map_location
        assert found and all(t.device.type == "cpu" for t in found), name
    hist = fit(build_model("resnet18", 4),
                 D.BatchLoader(x, y, 16, shuffle=True, augment="d4", device="cpu", seed=0),
                 None, epochs=2, device="cpu", out_dir=tmp_path, **kw)
    assert [h["epoch"] for h in hist] == [1, 2]


# --------------------------------------------------------------------------- losses, compile (h19b)


def _loss_inputs(classes=4, n=32, device="cuda"):
    g = torch.Generator().manual_seed(0)
    counts = [40, 20, 5, 2][:classes]
    return (torch.randn(n, 16, generator=g).to(device), (torch.arange(n) % classes).to(device),
            counts)


def test_every_loss_under_autocast_is_float32_finite_and_close_to_the_cpu():
    """Each registered loss on bf16 logits from an autocast forward: a finite float32 loss with
    finite gradients, within bf16 rounding of the same loss on the CPU in float32."""
    from hw2lib.nets.losses import available_losses, build_loss

    x, y, counts = _loss_inputs()
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 4).cuda()
    for name in available_losses():
        crit = build_loss(name, class_counts=counts).cuda()
        head.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16):
            logits = head(x)
            loss = crit(logits, y)
        assert logits.dtype == torch.bfloat16, name  # autocast ran
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in head.parameters()), name
        cpu_head = torch.nn.Linear(16, 4)
        cpu_head.load_state_dict({k: v.cpu() for k, v in head.state_dict().items()})
        ref = build_loss(name, class_counts=counts)(cpu_head(x.cpu()), y.cpu())
        torch.testing.assert_close(loss.cpu(), ref, atol=0.05, rtol=0.05, msg=name)


def test_a_fit_epoch_syncs_a_few_times_not_once_a_step():
    """fit's whole epoch (loader with colour jitter, mixup/CutMix, EMA, the per-epoch evaluation of
    the EMA and the raw weights, the divergence checks) under sync debug "warn": the host waits a
    few times an epoch, never once a step (16 steps here). No out_dir: checkpoints are apart."""
    import warnings

    x, y = _data(n=256)

    def run(epochs):
        torch.manual_seed(0)
        train = D.BatchLoader(x, y, 16, shuffle=True, augment="color", device="cuda", seed=0,
                              drop_last=True)
        val = D.BatchLoader(x, y, 64, device="cuda")
        fit(build_model("resnet18", 4), train, val, epochs=epochs, lr=0.05, device="cuda",
              progress=False, mix="both", ema=0.9)
        return len(train)

    run(1)  # warm-up: kernels, cuDNN's autotuning, the allocator
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            steps = run(2)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert steps == 16 and len(syncs) < 2 * steps, (len(syncs), syncs[:5])
