"""The CUDA path's fixes, checked on the CPU (issue 19: items 3–7, 10): augmentation and mixing
drawn once per epoch and sliced per batch, mixing that keeps channels_last, checkpoints written by
time (and at the end, and on an interruption) with exact resume, evaluation accumulated on the
device, fused optimizers and cudnn.benchmark only on CUDA, the EMA's multi-tensor update, the
classifier head in float32 under autocast, channels_last per model, CPU tensors in checkpoints."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from hw2lib import data as D
from hw2lib.core import runtime as R
from hw2lib.data import loaders as L
from hw2lib.nets.hooks import capture
from hw2lib.nets.nn_utils import Fp32Linear, keep_head_fp32
from hw2lib.train import checkpoints as C
from hw2lib.train import engine as E
from hw2lib.train import schedules as S
from hw2lib.train.ema import EMA
from hw2lib.train.mixing import Mixer, mix_batch
from tests.augment_reference import augment_batch
from tests.nets import (
    FIT_KW,
    CrashAfter,
    NaNAt,
    RecordsBenchmarkFlag,
    Tiny,
    fit,
    loader_pair,
    make_model,
)


def _uint8_data(n=40, classes=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), y


class _Counting:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.fn(*a, **kw)


# --------------------------------------------------------------------------- item 3: draws


@pytest.mark.parametrize("preset, kinds", [("basic", 2), ("d4", 3), ("color", 3)])
def test_loader_draws_an_epochs_augmentation_once_then_slices(monkeypatch, preset, kinds):
    x, y = _uint8_data()
    copies = _Counting(L.to_device_once)
    monkeypatch.setattr(L, "to_device_once", copies)
    loader = D.BatchLoader(x, y, 8, shuffle=True, augment=preset, seed=3)  # 5 batches
    it = iter(loader)
    first = next(it)
    state, made = loader.generator.get_state(), copies.calls
    rest = list(it)
    assert len(rest) == 4
    # everything the epoch needs was drawn and copied before its first batch: the order and
    # one copy per kind of parameter (crop offsets, flips, [transpositions | colour factors])
    assert made == 1 + kinds and copies.calls == made
    assert torch.equal(loader.generator.get_state(), state)  # no draw after the first batch
    # a seed gives the same epoch; the next epoch differs
    again = list(D.BatchLoader(x, y, 8, shuffle=True, augment=preset, seed=3))
    for (a, _), (b, _) in zip([first, *rest], again, strict=True):
        assert torch.equal(a, b)
    second = next(iter(loader))[0]
    assert not torch.equal(second, first[0])


def test_loader_last_short_batch_gets_its_own_slice():
    x, y = _uint8_data(n=21)
    loader = D.BatchLoader(x, y, 8, shuffle=True, augment="d4", seed=1)
    sizes = [xb.shape[0] for xb, _ in loader]
    assert sizes == [8, 8, 5]
    g = torch.Generator().manual_seed(1)  # the per-batch reference: same draws in the same order
    order = torch.randperm(21, generator=g)
    for k, (xb, _) in enumerate(D.BatchLoader(x, y, 8, shuffle=True, augment="d4", seed=1)):
        idx = order[8 * k:8 * k + 8]
        ref = augment_batch(x[idx].float() / 255, "d4", g)
        mean, std = torch.tensor(loader.mean), torch.tensor(loader.std)
        torch.testing.assert_close(xb, (ref - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1),
                                   atol=1e-5, rtol=1e-5)


def test_mixer_draws_its_epoch_once_deterministic_per_seed(monkeypatch):
    from hw2lib.train import mixing

    copies = _Counting(mixing.to_device_once)
    monkeypatch.setattr(mixing, "to_device_once", copies)
    x, y = torch.rand(8, 3, 6, 6), torch.arange(8) % 4
    g = torch.Generator().manual_seed(7)
    mixer = Mixer("both", 1.0, g, batches=5)
    outs = [mixer(x, y)]
    state = g.get_state()
    outs += [mixer(x, y) for _ in range(4)]
    assert copies.calls == 1 and torch.equal(g.get_state(), state)  # one draw, one copy
    for xm, ya, yb, lam in outs:
        assert 0 <= lam <= 1 and torch.equal(ya, y) and not torch.equal(xm, x)
        assert sorted(yb.tolist()) == sorted(y.tolist())  # the partners are a permutation
    again = Mixer("both", 1.0, torch.Generator().manual_seed(7), batches=5)
    for xm, _, yb, lam in outs:
        xm2, _, yb2, lam2 = again(x, y)
        assert torch.equal(xm, xm2) and torch.equal(yb, yb2) and lam == lam2
    other = Mixer("both", 1.0, torch.Generator().manual_seed(8), batches=5)(x, y)
    assert not torch.equal(other[0], outs[0][0])
    # a sixth call starts another block of draws from the generator
    made = copies.calls
    mixer(x, y)
    assert copies.calls == made + 1 and not torch.equal(g.get_state(), state)
    small_first = Mixer("mixup", 1.0, torch.Generator(), batches=2)
    small_first(torch.rand(4, 3, 2, 2), torch.arange(4))
    with pytest.raises(ValueError, match="first batch must be its largest"):
        small_first(torch.rand(6, 3, 2, 2), torch.arange(6))


def test_mixer_short_last_batch_gets_a_permutation_of_its_own():
    g = torch.Generator().manual_seed(2)
    mixer = Mixer("mixup", 1.0, g, batches=2)
    x, y = torch.rand(8, 3, 4, 4), torch.arange(8)
    mixer(x, y)
    xm, _, yb, lam = mixer(x[:5], y[:5])
    assert sorted(yb.tolist()) == [0, 1, 2, 3, 4] and xm.shape == (5, 3, 4, 4)
    torch.testing.assert_close(xm, torch.lerp(x[yb], x[:5], lam))
    again = Mixer("mixup", 1.0, torch.Generator().manual_seed(2), batches=2)
    again(x, y)
    assert torch.equal(again(x[:5], y[:5])[2], yb)


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "both"])
def test_mixing_keeps_channels_last(kind):
    x = torch.rand(8, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8) % 4
    for out in (mix_batch(x, y, kind, 1.0, torch.Generator().manual_seed(0))[0],
                Mixer(kind, 1.0, torch.Generator().manual_seed(0), batches=1)(x, y)[0]):
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    plain = torch.rand(8, 3, 6, 6)
    assert mix_batch(plain, y, kind, 1.0, torch.Generator())[0].is_contiguous()


# --------------------------------------------------------------------------- item 4: by time


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_checkpoint_writer_writes_by_time_and_flushes(tmp_path):
    clock = _Clock()
    w = C.CheckpointWriter(tmp_path, every=60, clock=clock)

    def epoch(k, best, raw=False):
        state = {"model": {"w": torch.full((2,), float(k))}, "epoch": k}
        return w.epoch(state, state if best else None,
                       others={"best_raw.pt": state} if raw else None)

    def on_disk(name):
        return torch.load(tmp_path / name, weights_only=True)["epoch"]

    assert epoch(1, best=True)  # the first epoch is always written
    clock.t = 20
    assert not epoch(2, best=True, raw=True)
    clock.t = 50
    assert not epoch(3, best=False)
    assert on_disk("last.pt") == 1 and on_disk("best.pt") == 1 and w.writes == 1
    assert not (tmp_path / "best_raw.pt").exists()
    clock.t = 61  # 61 s after the last write
    assert epoch(4, best=False)
    assert on_disk("last.pt") == 4 and on_disk("best.pt") == 2  # the pending best went too
    assert on_disk("best_raw.pt") == 2
    clock.t = 70
    assert not epoch(5, best=True)
    assert w.flush() and on_disk("last.pt") == 5 and on_disk("best.pt") == 5
    assert not w.flush() and w.writes == 3  # nothing pending
    assert epoch(6, best=False) is False and w.epoch({"epoch": 7}, force=True)
    assert on_disk("last.pt") == 7
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        C.CheckpointWriter(tmp_path, every=-1)


def test_pending_checkpoint_is_a_snapshot(tmp_path):
    clock = _Clock()
    w = C.CheckpointWriter(tmp_path, every=60, clock=clock)
    w.epoch({"model": {"w": torch.zeros(2)}, "history": [1]})
    live = {"model": {"w": torch.ones(2)}, "history": [1, 2]}
    clock.t = 1
    w.epoch(live)
    live["model"]["w"].add_(5)  # training goes on
    live["history"].append(3)
    w.flush()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.equal(saved["model"]["w"], torch.ones(2)) and saved["history"] == [1, 2]


def _saved_epochs(monkeypatch):
    saved = []
    real = C.save

    def record(obj, path):
        saved.append((path.name, obj["epoch"]))
        real(obj, path)

    monkeypatch.setattr(C, "save", record)
    return saved


def test_fit_writes_last_pt_by_time_and_at_the_end(tmp_path, monkeypatch):
    saved = _saved_epochs(monkeypatch)
    train, val = loader_pair()
    hist = fit(make_model(), train, val, epochs=4, out_dir=tmp_path, checkpoint_every=3600,
                 **FIT_KW)
    assert [e for n, e in saved if n == "last.pt"] == [1, 4]  # the first and the last epoch
    best_epoch = max(hist, key=lambda h: h["val_acc"])["epoch"]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == best_epoch
    assert len(C.read_history(tmp_path)) == 4  # the history is still written every epoch
    saved.clear()
    fit(make_model(), train, val, epochs=3, out_dir=tmp_path / "every", checkpoint_every=0,
          **FIT_KW)
    assert [e for n, e in saved if n == "last.pt"] == [1, 2, 3]


def test_interrupted_fit_writes_its_last_epoch_and_resumes_exactly(tmp_path, monkeypatch):
    kw = {**FIT_KW, "checkpoint_every": 3600}
    train, val = loader_pair(seed=3)
    straight_model = make_model(seed=1)
    straight = fit(straight_model, train, val, epochs=5, out_dir=tmp_path / "a", **kw)
    saved = _saved_epochs(monkeypatch)
    train, val = loader_pair(seed=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_model(seed=1), CrashAfter(train, 3), val, epochs=5, out_dir=tmp_path / "b",
              **kw)
    assert [e for n, e in saved if n == "last.pt"] == [1, 3]  # epoch 3 written on the crash
    train, val = loader_pair(seed=99)
    resumed_model = make_model(seed=42)
    resumed = fit(resumed_model, train, val, epochs=5, out_dir=tmp_path / "b",
                    **kw)
    assert resumed == [{**h, "seconds": r["seconds"], "images_per_s": r["images_per_s"]}
                       for h, r in zip(straight, resumed, strict=True)]
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


class _InterruptAt:
    """A loader whose `at`-th batch overall raises KeyboardInterrupt (Ctrl-C mid-epoch)."""

    def __init__(self, loader, at):
        self.loader, self.at, self.n = loader, at, 0
        self.generator = loader.generator

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for b in self.loader:
            self.n += 1
            if self.n == self.at:
                raise KeyboardInterrupt
            yield b


def test_ctrl_c_mid_epoch_writes_the_last_completed_epoch(tmp_path):
    train, val = loader_pair()  # 3 batches an epoch
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), _InterruptAt(train, 3 * 2 + 2), val, epochs=5, out_dir=tmp_path,
              checkpoint_every=3600, **FIT_KW)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and len(last["history"]) == 2


def test_divergence_after_unwritten_epochs_names_the_flushed_checkpoint(tmp_path):

    train, val = loader_pair()  # 3 steps per epoch
    model = nn.Sequential(make_model(), NaNAt(at=3 * 2 + 2))  # epoch 3, step 2
    with pytest.raises(E.TrainingDiverged) as err:
        fit(model, train, val, epochs=4, out_dir=tmp_path, checkpoint_every=3600, **FIT_KW)
    assert "last.pt (epoch 2) is kept" in str(err.value)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2


def test_checkpoints_hold_cpu_tensors_in_plain_containers():
    state = {"model": {"w": torch.ones(2)}, "opt": [torch.zeros(1), (torch.ones(1), 3)], "n": 1}
    cpu = C.to_cpu(state)
    assert cpu["n"] == 1 and isinstance(cpu["opt"][1], tuple)
    assert all(t.device.type == "cpu" for t in (cpu["model"]["w"], cpu["opt"][0],
                                                   cpu["opt"][1][0]))
    snap = C.snapshot(state)
    state["model"]["w"].add_(1)
    assert torch.equal(snap["model"]["w"], torch.ones(2))
    # save() maps every tensor through .cpu(): a tensor that is not on the CPU comes back on it
    moved = []

    class OnDevice(torch.Tensor):
        def cpu(self, *a, **kw):
            moved.append(1)
            return torch.Tensor(self).clone()

    C.to_cpu({"a": torch.ones(1).as_subclass(OnDevice)})
    assert moved == [1]


# --------------------------------------------------------------------------- item 4: evaluation


def test_evaluate_and_predict_accumulate_on_the_device(monkeypatch):
    x, y = _uint8_data(n=48, classes=3)
    loader = D.BatchLoader(x, y, 8)  # 6 batches
    model = Tiny().eval()
    expected = E.evaluate(model, loader)
    calls = {"cpu": 0, "item": 0, "float": 0}
    real = {k: getattr(torch.Tensor, k) for k in ("cpu", "item", "__float__")}

    def counted(name, key):
        def f(self, *a, **kw):
            calls[key] += 1
            return real[name](self, *a, **kw)
        return f

    monkeypatch.setattr(torch.Tensor, "cpu", counted("cpu", "cpu"))
    monkeypatch.setattr(torch.Tensor, "item", counted("item", "item"))
    monkeypatch.setattr(torch.Tensor, "__float__", counted("__float__", "float"))
    got = E.evaluate(model, loader)
    assert calls == {"cpu": 2, "item": 1, "float": 0}  # once at the end, not per batch
    assert got == expected
    calls.update(cpu=0, item=0, float=0)
    logits, plain, targets = E.predict_tta(model, loader)
    assert calls["cpu"] == 3 and calls["item"] == 0 and logits.shape == (48, 3)


def test_eval_batch_size_is_larger_only_on_cuda(small_ds):
    from hw2lib.train.experiment import make_loader
    from hw2lib.train.recipes import resolve

    assert R.eval_batch_size(128, "cuda") == 128 * R.EVAL_BATCH_FACTOR
    assert R.eval_batch_size(128, torch.device("cpu")) == 128
    cfg = resolve({"name": "t", "epochs": 1, "seed": 0, "batch_size": 16})
    rows = small_ds.indices("val")
    assert make_loader(small_ds, rows, cfg, "cpu", train=False).batch_size == 16
    assert make_loader(small_ds, rows, cfg, "cpu", train=False, batch_size=5).batch_size == 5
    assert make_loader(small_ds, rows, cfg, "cpu", train=True).batch_size == 16


# --------------------------------------------------------------------------- item 5


def test_fused_optimizers_only_on_cuda():
    assert R.optimizer_options("cuda") == {"fused": True}
    assert R.optimizer_options(torch.device("cuda", 1)) == {"fused": True}
    assert R.optimizer_options("cpu") == {}
    for name in ("sgd", "adam", "adamw"):
        params = [nn.Parameter(torch.zeros(3))]
        assert S.build_optimizer(name, params, lr=0.1, device="cuda").defaults["fused"] is True
        assert not S.build_optimizer(name, params, lr=0.1, device="cpu").defaults.get("fused")
        assert not S.build_optimizer(name, params, lr=0.1).defaults.get("fused")


def test_fit_on_the_cpu_is_not_fused_and_leaves_cudnn_benchmark(monkeypatch):
    seen = []
    real = S.build_optimizer

    def spy(*a, **kw):
        opt = real(*a, **kw)
        seen.append(opt.defaults.get("fused"))
        return opt

    monkeypatch.setattr(S, "build_optimizer", spy)
    before = torch.backends.cudnn.benchmark
    train, val = loader_pair()
    rec = RecordsBenchmarkFlag(train)
    fit(make_model(), rec, val, epochs=1, **FIT_KW)
    assert seen == [None] or seen == [False]
    assert rec.flags == [before] and torch.backends.cudnn.benchmark == before


def test_cudnn_benchmark_on_cuda_only_and_restored():
    torch.backends.cudnn.benchmark = False
    with R.cudnn_benchmark("cpu"):
        assert torch.backends.cudnn.benchmark is False
    with R.cudnn_benchmark("cuda"):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is False
    with pytest.raises(RuntimeError, match="boom"), R.cudnn_benchmark("cuda"):
        raise RuntimeError("boom")
    assert torch.backends.cudnn.benchmark is False


def test_ema_update_is_two_multi_tensor_ops(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                          nn.BatchNorm2d(4))
    ema = EMA(model, 0.9)
    model(torch.rand(2, 3, 5, 5))  # the BatchNorm counters move
    lerp = _Counting(torch._foreach_lerp_)
    copy = _Counting(torch._foreach_copy_)
    monkeypatch.setattr(torch, "_foreach_lerp_", lerp)
    monkeypatch.setattr(torch, "_foreach_copy_", copy)
    ema.update()
    assert (lerp.calls, copy.calls) == (1, 1)
    for k in ("1.num_batches_tracked", "3.num_batches_tracked"):
        assert int(ema.model.state_dict()[k]) == 1 == int(model.state_dict()[k])


# --------------------------------------------------------------------------- item 6


def test_channels_last_is_a_per_model_choice():
    from hw2lib.nets.models import available_models, build_model

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    resnet, resnext = build_model("resnet18", 4), build_model("resnext18", 4)
    assert R.channels_last_for(resnet, cuda, "resnet18") is True
    assert R.channels_last_for(resnext, cuda, "resnext18") is False
    assert R.channels_last_for(resnext, cuda) is False  # unnamed: narrow groups decide
    assert R.channels_last_for(resnet, cuda) is True
    assert not R.channels_last_for(resnet, cpu, "resnet18")
    assert R.narrow_groups(resnext) and not R.narrow_groups(resnet)
    assert set(R.CHANNELS_LAST_ON_CUDA) <= set(available_models())


# --------------------------------------------------------------------------- item 7


def test_head_runs_in_fp32_under_cpu_bf16_autocast():
    model = Tiny().eval()
    x = torch.rand(4, 3, 6, 6)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16), capture(model, "head.3") as head, \
                capture(model, "conv") as conv:
            model(x)
        assert conv.output.dtype == torch.bfloat16 and head.output.dtype == torch.bfloat16
        keep_head_fp32(model)
        assert type(model.head[3]) is Fp32Linear and type(model.head[1]) is nn.Linear
        assert list(model.state_dict()) == list(Tiny().state_dict())
        with torch.autocast("cpu", dtype=torch.bfloat16), capture(model, "head.3") as head, \
                capture(model, "conv") as conv:
            model(x)
        assert conv.output.dtype == torch.bfloat16  # autocast really ran
        assert head.output.dtype == torch.float32
        torch.testing.assert_close(model(x), ref)  # outside autocast: the same Linear
    keep_head_fp32(model)  # again: nothing changes
    assert type(model.head[3]) is Fp32Linear


def test_predict_and_fit_under_cpu_autocast_give_fp32_logits(tmp_path):
    x, y = _uint8_data(n=16, classes=3, size=6)
    model = Tiny()
    logits, _ = E.predict(model, D.BatchLoader(x, y, 8), amp=True)
    assert type(model.head[3]) is Fp32Linear
    assert logits.dtype == torch.float32
    assert not torch.equal(logits, logits.bfloat16().float())  # not bf16-rounded
    fitted = Tiny()
    fit(fitted, D.BatchLoader(x, y, 8, shuffle=True, seed=0), D.BatchLoader(x, y, 8),
          epochs=1, lr=0.01, device="cpu", amp=True, ema=0.9, progress=False, out_dir=tmp_path)
    assert type(fitted.head[3]) is Fp32Linear
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(last["model"]) == set(Tiny().state_dict())  # same keys: loads into a plain model
    Tiny().load_state_dict(last["ema"]["model"])


# --------------------------------------------------------------------------- all together


def test_an_epoch_of_the_fast_path_with_mixing_and_ema_on_the_cpu(tmp_path):
    """The loader, the Mixer and the EMA together through fit: deterministic per seed, and a
    resumed run equal to an uninterrupted one (draws per epoch come from the checkpointed
    generator)."""
    x, y = _uint8_data(n=32, classes=3)

    def run(out, crash=None):
        torch.manual_seed(0)
        train = D.BatchLoader(x, y, 8, shuffle=True, augment="color", seed=5, drop_last=True)
        loader = CrashAfter(train, crash) if crash is not None else train
        model = Tiny()
        hist = fit(model, loader, D.BatchLoader(x, y, 16), epochs=3, lr=0.05, device="cpu",
                   mix="both", ema=0.9, progress=False, out_dir=out, checkpoint_every=3600)
        return hist, model

    a, model_a = run(tmp_path / "a")
    b, _ = run(tmp_path / "b")
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    assert [[h[k] for k in keys] for h in a] == [[h[k] for k in keys] for h in b]
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "c", crash=2)
    c, model_c = run(tmp_path / "c")
    assert [[h[k] for k in keys] for h in a] == [[h[k] for k in keys] for h in c]
    for p, q in itertools.zip_longest(model_a.parameters(), model_c.parameters()):
        assert torch.equal(p, q)
