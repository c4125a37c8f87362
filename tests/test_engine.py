"""hw2lib.train.engine: optimizers, LR schedules, fit (overfit, history, checkpoints, exact resume,
NaN stop, progress), evaluate/predict. Tiny models and TensorDatasets only (fast on 2 cores)."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hw2lib.core import runtime as R
from hw2lib.train import checkpoints as C
from hw2lib.train import engine as E
from hw2lib.train import schedules as S
from hw2lib.train.recipes import Recipe
from tests.nets import (
    FIT_KW,
    HISTORY_KEYS,
    CrashAfter,
    NaNAt,
    NeverIterate,
    fit,
    loader_pair,
    make_data,
    make_loader,
    make_model,
)

BUILTIN = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


def assert_plain(obj, where="ckpt"):
    assert isinstance(obj, BUILTIN), f"{where} holds a {type(obj).__name__}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str | int), f"{where} has key {k!r}"
            assert_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            assert_plain(v, f"{where}[{i}]")


# --------------------------------------------------------------------------- schedules


def test_multistep_schedule_milestones_and_gamma():
    lrs = S.lr_table("multistep", lr=1.0, epochs=8, milestones=(3, 6), gamma=0.1)
    assert lrs == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)


def test_cosine_schedule_formula_and_endpoints():
    lr, epochs = 0.1, 6
    lrs = S.lr_table("cosine", lr=lr, epochs=epochs)
    expected = [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(lr)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    # the same as torch's CosineAnnealingLR; reaches 0 after the last epoch's step
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    ref_lrs = []
    for _ in range(epochs):
        ref_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert lrs == pytest.approx(ref_lrs, rel=1e-9)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = S.build_scheduler("cosine", opt, epochs=epochs, steps_per_epoch=1)
    for _ in range(epochs):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)


def test_exponential_and_constant_schedules():
    assert S.lr_table("exponential", lr=0.8, epochs=4, gamma=0.5) == pytest.approx(
        [0.8, 0.4, 0.2, 0.1], rel=1e-12)
    assert S.lr_table("none", lr=0.3, epochs=3) == pytest.approx([0.3] * 3, rel=1e-12)


def test_warmup_ramps_linearly_then_follows_schedule():
    lr = 1.0
    lrs = S.lr_table("cosine", lr=lr, epochs=7, warmup_epochs=3)
    assert lrs[:3] == pytest.approx([0.25, 0.5, 0.75], rel=1e-12)  # lr*(e+1)/(w+1)
    expected = [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]  # T = epochs - warmup
    assert lrs[3:] == pytest.approx(expected, rel=1e-12)
    lrs = S.lr_table("exponential", lr=lr, epochs=5, warmup_epochs=1, gamma=0.5)
    assert lrs == pytest.approx([0.5, 1, 0.5, 0.25, 0.125], rel=1e-12)
    lrs = S.lr_table("multistep", lr=lr, epochs=6, warmup_epochs=2, milestones=(4,), gamma=0.1)
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1, 1, 0.1, 0.1], rel=1e-12)  # absolute milestones
    assert S.lr_table("none", lr=0.2, epochs=3, warmup_epochs=1) == pytest.approx(
        [0.1, 0.2, 0.2], rel=1e-12)


def test_schedule_errors_name_the_choices():
    with pytest.raises(ValueError, match="none, multistep, cosine, exponential"):
        S.lr_table("step", lr=0.1, epochs=3)
    with pytest.raises(ValueError, match="milestones"):
        S.lr_table("multistep", lr=0.1, epochs=3)
    with pytest.raises(ValueError, match="warmup_epochs"):
        S.lr_table("cosine", lr=0.1, epochs=3, warmup_epochs=-1)
    # a run shorter than its warmup is all warmup (smoke profiles shrink epochs)
    assert S.lr_table("cosine", lr=1.0, epochs=2, warmup_epochs=3) == pytest.approx(
        [0.25, 0.5], rel=1e-12)


def test_scheduler_state_dict_resumes():
    def fresh():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, S.build_scheduler("cosine", opt, epochs=10, steps_per_epoch=1, warmup_epochs=2)

    opt, sched = fresh()
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert_plain(state)
    opt2, sched2 = fresh()
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_build_optimizer_choices():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = S.build_optimizer("sgd", params, lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    g = sgd.param_groups[0]
    assert (g["momentum"], g["nesterov"], g["weight_decay"]) == (0.8, True, 1e-4)
    adam = S.build_optimizer("Adam", params, lr=1e-3, weight_decay=0.01)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 0.01
    assert isinstance(S.build_optimizer("adamw", params, lr=1e-3, weight_decay=0.05),
                      torch.optim.AdamW)
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        S.build_optimizer("rmsprop", params, lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        S.build_optimizer("sgd", params, lr=0.1, momentum=0.0, nesterov=True)


# --------------------------------------------------------------------------- device, seeds, info


def test_resolve_device_and_run_info():
    expected = R.default_device().type  # "auto": CUDA where torch can use it, else the CPU
    assert R.resolve_device().type == expected
    assert R.resolve_device("auto").type == expected
    assert R.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        R.resolve_device("tpu-9000")
    info = R.run_info("cpu")
    for key in ("python", "torch", "torchvision", "numpy", "device", "device_name"):
        assert info[key], key
    assert info["device"] == "cpu"


def test_seed_everything_reproduces_all_global_rngs():
    import random

    R.seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    R.seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# --------------------------------------------------------------------------- fit


def test_tiny_model_overfits_tiny_batch():
    x, y = make_data(n=16)
    loader = make_loader(x, y, batch_size=16)
    model = make_model(dropout=0.0)
    hist = fit(model, loader, loader, epochs=60, optimizer="adam", lr=0.02, weight_decay=0.0,
                 device="cpu", progress=False)
    assert len(hist) == 60
    first, last = hist[0]["train_loss"], hist[-1]["train_loss"]
    assert first / last >= 10, f"loss fell only {first / last:.1f}x ({first:.3f} -> {last:.4f})"
    assert hist[-1]["train_acc"] == 1.0 and hist[-1]["val_acc"] == 1.0
    assert set(hist[0]) == HISTORY_KEYS


def test_history_checkpoints_and_run_json(tmp_path):
    train, val = loader_pair()
    model = make_model()
    hist = fit(model, train, val, name="tiny", epochs=3, out_dir=tmp_path, seed=11, **FIT_KW)
    # history.jsonl equals the returned history
    assert C.read_history(tmp_path) == hist
    assert [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()] == hist
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert [h["lr"] for h in hist] == pytest.approx(
        S.lr_table("cosine", lr=0.05, epochs=3, warmup_epochs=1), rel=1e-12)
    for h in hist:
        assert 0 <= h["val_acc"] <= 1 and 0 <= h["val_bal_acc"] <= 1
        assert h["seconds"] > 0 and h["images_per_s"] > 0
    # checkpoints: plain dicts, loadable with weights_only=True
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert_plain(last, "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "best_val_acc", "config", "history",
            "rng"} <= set(last)
    assert last["epoch"] == 3 and last["history"] == hist
    assert last["config"] == Recipe(name="tiny", epochs=3, seed=11, **{
        k: v for k, v in FIT_KW.items() if k not in ("device", "progress")}).as_dict()
    assert last["max_steps"] is None
    assert last["best_val_acc"] == max(h["val_acc"] for h in hist)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert_plain(best, "best.pt")
    best_epoch = max(hist, key=lambda h: h["val_acc"])["epoch"]  # first of ties
    assert best["epoch"] == best_epoch and best["val_acc"] == last["best_val_acc"]
    fresh = make_model(seed=5)
    C.load_checkpoint(tmp_path / "last.pt", fresh)
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 11 and run["config"]["name"] == "tiny"
    for key in ("python", "torch", "torchvision", "numpy", "device_name"):
        assert run[key]
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_no_val_loader_last_is_best(tmp_path):
    train, _ = loader_pair()
    hist = fit(make_model(), train, None, epochs=2, out_dir=tmp_path, **FIT_KW)
    assert hist[-1]["val_acc"] is None and hist[-1]["val_loss"] is None
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 2


def test_resume_equals_uninterrupted_run_exactly(tmp_path):
    epochs = 4
    train, val = loader_pair(seed=3)
    straight_model = make_model(seed=1)
    straight = fit(straight_model, train, val, epochs=epochs, out_dir=tmp_path / "a", **FIT_KW)

    train, val = loader_pair(seed=3)
    model = make_model(seed=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(model, CrashAfter(train, 2), val, epochs=epochs, out_dir=tmp_path / "b", **FIT_KW)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 2

    # a new process: other initial weights, another loader seed, the global RNG moved on
    train, val = loader_pair(seed=99)
    resumed_model = make_model(seed=42)
    torch.manual_seed(12345)
    resumed = fit(resumed_model, train, val, epochs=epochs, out_dir=tmp_path / "b",
                    **FIT_KW)

    assert len(resumed) == epochs
    for a, b in zip(straight, resumed, strict=True):
        for key in ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                    "val_bal_acc"):
            assert a[key] == b[key], (a["epoch"], key, a[key], b[key])
    for (name, a), b in zip(straight_model.state_dict().items(),
                            resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert C.read_history(tmp_path / "b") == resumed  # history.jsonl rewritten consistently

    # all epochs done: the stored history comes back without training, weights loaded
    again = make_model(seed=7)
    done = fit(again, NeverIterate(), val, epochs=epochs, out_dir=tmp_path / "b",
                 **FIT_KW)
    assert done == resumed
    for a, b in zip(again.state_dict().values(), resumed_model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)

    with pytest.raises(ValueError, match=r"another training \(recipe.lr differ\)"):
        fit(make_model(), train, val, epochs=epochs, out_dir=tmp_path / "b",
              **{**FIT_KW, "lr": 0.5})


def test_nan_after_resume_leaves_last_pt_byte_identical(tmp_path):
    train, val = loader_pair()  # 3 steps per epoch
    model = nn.Sequential(make_model(), NaNAt(at=3 + 2))  # epoch 2, step 2
    fit(model, train, val, epochs=1, out_dir=tmp_path, **FIT_KW)  # epoch 1 completes
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(E.TrainingDiverged, match=r"epoch 2, step 2\b"):
        fit(model, train, val, epochs=3, out_dir=tmp_path, **FIT_KW)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_nan_loss_mid_run_keeps_last_good_checkpoint(tmp_path):
    train, val = loader_pair()  # 3 steps per epoch
    model = nn.Sequential(make_model(), NaNAt(at=3 + 2))  # epoch 2, step 2
    with pytest.raises(E.TrainingDiverged, match=r"epoch 2, step 2\b") as err:
        fit(model, train, val, epochs=3, out_dir=tmp_path, **FIT_KW)
    assert "nan" in str(err.value) and "last.pt (epoch 1) is kept" in str(err.value)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert len(C.read_history(tmp_path)) == 1


def test_huge_lr_diverges_with_clear_error():
    x, y = make_data()
    with pytest.raises(E.TrainingDiverged, match=r"epoch 1, step \d+"):
        fit(make_model(dropout=0.0), make_loader(x, y), None, epochs=2, optimizer="sgd",
              lr=1e30, device="cpu", progress=False)


def test_progress_line_mode_prints_one_line_per_epoch(capsys):
    train, val = loader_pair()
    fit(make_model(), train, val, epochs=3, **{**FIT_KW, "progress": "line"})
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3 and "\r" not in out and "\r" not in err
    for i, line in enumerate(lines, 1):
        assert line.startswith(f"epoch {i}/3  lr ")
        assert " train " in line and " val " in line and "(bal " in line and "img/s" in line
    # "auto" is line mode when stderr is not a terminal (papermill, CI); False is silent
    fit(make_model(), train, val, epochs=2, **{**FIT_KW, "progress": "auto"})
    assert len(capsys.readouterr().out.splitlines()) == 2
    fit(make_model(), train, val, epochs=2, **FIT_KW)
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ValueError, match="progress"):
        fit(make_model(), train, val, epochs=1, **{**FIT_KW, "progress": "verbose"})


def test_progress_bar_mode_writes_to_stderr_only(capsys):
    train, val = loader_pair()
    fit(make_model(), train, val, epochs=2, **{**FIT_KW, "progress": "bar"})
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1/2" in err and "epoch 2/2" in err and "img/s" in err


def test_max_steps_caps_steps_per_epoch():
    x, y = make_data()
    calls = []

    class Count(nn.Module):
        def forward(self, x):
            if self.training:
                calls.append(1)
            return x

    model = nn.Sequential(make_model(), Count())
    fit(model, make_loader(x, y, batch_size=4), None, epochs=2, max_steps=2, device="cpu",
          progress=False)
    assert len(calls) == 4


# --------------------------------------------------------------------------- evaluate / predict


def test_evaluate_and_predict_hand_computed():
    # identity "model" on 3 features: logits are the inputs
    logits = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    y = torch.tensor([0, 1, 1, 2])  # right, right, wrong, wrong
    loader = DataLoader(TensorDataset(logits, y), batch_size=3)
    model = nn.Sequential(nn.Identity(), nn.Linear(3, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3))
        model[1].bias.zero_()
    model.train()
    res = E.evaluate(model, loader)
    assert res["acc"] == pytest.approx(0.5)
    assert res["bal_acc"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert res["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert model.training  # mode restored
    out, tgt = E.predict(model, loader)
    assert out.dtype == torch.float32 and tgt.dtype == torch.int64
    torch.testing.assert_close(out, logits)
    assert torch.equal(tgt, y)


# --------------------------------------------------------------------------- divergence, files


def bn_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 3))


class InfBufferAt(nn.Module):
    """Identity; in training, its buffer `stat` becomes inf at the `at`-th forward call (a
    BatchNorm running statistic blowing up while the loss stays finite)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0
        self.register_buffer("stat", torch.zeros(2))

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                self.stat.fill_(math.inf)
        return x


def all_finite(ckpt):
    return all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_huge_finite_loss_with_nan_val_loss_writes_no_checkpoint(tmp_path):
    # lr 1e6: epoch 1's train loss is huge but finite, its val loss NaN (BatchNorm statistics
    # blown up); before, this epoch was saved as best.pt and last.pt and training went on
    train, val = loader_pair()
    with pytest.raises(E.TrainingDiverged) as err:
        fit(bn_model(), train, val, epochs=2, optimizer="sgd", lr=1e6, weight_decay=0.0,
              device="cpu", progress=False, out_dir=tmp_path)
    msg = str(err.value)
    assert "diverged at epoch 1" in msg and "val loss nan" in msg
    assert "train loss" not in msg  # the train loss itself was finite
    assert "Last good checkpoint: none (it diverged in the first epoch)" in msg
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()
    assert not (tmp_path / "history.jsonl").exists()


def test_nonfinite_buffer_is_never_saved_and_names_the_tensor(tmp_path):
    train, val = loader_pair()  # 3 steps per epoch
    model = nn.Sequential(make_model(), InfBufferAt(at=3 + 1))  # inf during epoch 2
    with pytest.raises(E.TrainingDiverged) as err:
        fit(model, train, val, epochs=3, out_dir=tmp_path, **FIT_KW)
    msg = str(err.value)
    assert "diverged at epoch 2" in msg and "model.1.stat" in msg
    assert f"Last good checkpoint: {tmp_path / 'last.pt'} (epoch 1) is kept." in msg
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["epoch"] == 1, name
        assert all_finite(ckpt), name
        assert torch.equal(ckpt["model"]["1.stat"], torch.zeros(2))
    assert [h["epoch"] for h in C.read_history(tmp_path)] == [1]


def test_divergence_message_does_not_call_a_poisoned_last_pt_good(tmp_path):
    # a last.pt with an inf BatchNorm variance (as earlier versions wrote them): resuming from
    # it diverges, and the message must not offer it as the last good checkpoint
    train, val = loader_pair()
    fit(bn_model(), train, val, epochs=1, out_dir=tmp_path, **FIT_KW)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    ckpt["model"]["2.running_var"][0] = math.inf
    torch.save(ckpt, tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(E.TrainingDiverged) as err:
        fit(bn_model(), train, val, epochs=2, out_dir=tmp_path, **FIT_KW)
    msg = str(err.value)
    assert "diverged at epoch 2" in msg and "model.2.running_var" in msg
    assert "Last good checkpoint: none" in msg and "not a finite checkpoint of epoch 1" in msg
    assert (tmp_path / "last.pt").read_bytes() == before


def test_stale_temp_files_removed_when_fit_starts(tmp_path):
    stale = [".last.pt.tmp-k3j2h1", ".best.pt.tmp-0a9z", ".history.jsonl.tmp-q"]  # hw2lib.core.io's
    keep = ["notes.txt", ".hidden", "last.pt.tmp-not-hidden", ".last.pt.tmpx"]
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"half a file")
    train, val = loader_pair()
    with pytest.raises(RuntimeError, match="simulated crash"):  # no epoch runs at all
        fit(make_model(), CrashAfter(train, 0), val, epochs=1, out_dir=tmp_path, **FIT_KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_load_checkpoint_corrupt_files_raise_clear_error(tmp_path):
    from hw2lib.core.io import CorruptFileError

    train, val = loader_pair()
    fit(make_model(), train, val, epochs=1, out_dir=tmp_path / "run", **FIT_KW)
    data = (tmp_path / "run" / "last.pt").read_bytes()
    half = len(data) // 2
    cases = {"empty.pt": (b"", "empty (0 bytes)"),
             "half.pt": (data[:half], f"truncated or damaged ({half:,} bytes)"),
             "cut.pt": (data[:-10], "truncated or damaged")}
    for name, (content, why) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CorruptFileError) as err:
            C.load_checkpoint(path, make_model())
        msg = str(err.value)
        assert msg.startswith(f"checkpoint {path} is {why}"), msg
        assert "Delete it to start this run over" in msg
    # fit(resume=True) over a truncated last.pt says the same
    (tmp_path / "run" / "last.pt").write_bytes(data[:100])
    with pytest.raises(CorruptFileError, match="last.pt is truncated.*Delete it"):
        fit(make_model(), train, val, epochs=2, out_dir=tmp_path / "run",
              **FIT_KW)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CorruptFileError, match="not a checkpoint written by"):
        C.load_checkpoint(tmp_path / "other.pt")


def test_resume_with_fewer_epochs_than_done_is_an_error(tmp_path):
    train, val = loader_pair()
    hist = fit(make_model(), train, val, epochs=3, out_dir=tmp_path, **FIT_KW)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"epochs=2: that run has already done 3 epochs.*"
                                         r"epochs >= 3.*another out_dir"):
        fit(make_model(), train, val, epochs=2, out_dir=tmp_path, **FIT_KW)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert C.read_history(tmp_path) == hist
    # equal epochs: the stored history; more: extended
    assert fit(make_model(), NeverIterate(), val, epochs=3, out_dir=tmp_path,
                 **FIT_KW) == hist
    longer = fit(make_model(), train, val, epochs=4, out_dir=tmp_path, **FIT_KW)
    assert longer[:3] == hist and longer[3]["epoch"] == 4
    with pytest.raises(ValueError,
                       match=r"another training \(recipe.momentum differ\).*Use another out_dir"):
        fit(make_model(), train, val, epochs=4, out_dir=tmp_path,
              **{**FIT_KW, "momentum": 0.5})


# --------------------------------------------------------------------------- the train step


def test_history_train_loss_is_the_sample_weighted_mean_of_the_step_losses():
    """train_loss / train_acc of an epoch are those of its steps (an uneven last batch weighted
    by its size), recomputed here by a plain loop of the same SGD steps on a copy."""
    x, y = make_data(n=20)
    loader = make_loader(x, y, batch_size=8, shuffle=False)  # batches of 8, 8, 4
    model, ref = make_model(seed=4, dropout=0.0), make_model(seed=4, dropout=0.0)
    hist = fit(model, loader, None, epochs=2, optimizer="sgd", lr=0.1, momentum=0.0,
               weight_decay=0.0, device="cpu", progress=False)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for h in hist:
        losses, hits, sizes = [], 0, []
        for xb, yb in loader:
            out = ref(xb)
            loss = nn.functional.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            hits += int((out.argmax(1) == yb).sum())
            sizes.append(len(yb))
        assert sizes == [8, 8, 4]
        assert h["train_loss"] == pytest.approx(np.dot(losses, sizes) / 20, rel=1e-6)
        assert h["train_acc"] == hits / 20


def test_a_nan_loss_is_named_at_its_own_step():
    """Losses are checked in batches of CHECK_EVERY steps (host syncs), yet the first bad step
    is the one named."""
    x, y = make_data(n=120)
    loader = [(x[i:i + 1], y[i:i + 1]) for i in range(120)]  # 120 steps
    model = nn.Sequential(make_model(), NaNAt(at=7))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(E.TrainingDiverged, match=r"epoch 4, step 7\b"):
        E.train_one_epoch(model, nn.CrossEntropyLoss(), opt, loader, torch.device("cpu"),
                          epoch=4)


def test_train_step_is_one_sgd_step():
    x, y = make_data(n=8)
    model = make_model(dropout=0.0)
    ref = make_model(dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss, logits, targets = E.train_step(model, nn.CrossEntropyLoss(), opt, x, y,
                                         torch.device("cpu"))
    expected_logits = ref(x)
    expected = nn.functional.cross_entropy(expected_logits, y)
    expected.backward()
    assert not loss.requires_grad and not logits.requires_grad
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(logits, expected_logits.detach())
    assert torch.equal(targets, y)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach() - 0.1 * q.grad)


def test_run_json_records_each_resume_and_keeps_the_first_start(tmp_path):
    train, val = loader_pair(seed=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_model(), CrashAfter(train, 1), val, epochs=3, out_dir=tmp_path, **FIT_KW)
    first = json.loads((tmp_path / "run.json").read_text())
    assert "resumes" not in first
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_model(), CrashAfter(train, 1), val, epochs=3, out_dir=tmp_path, **FIT_KW)
    fit(make_model(), train, val, epochs=3, out_dir=tmp_path, **FIT_KW)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["started"] == first["started"]
    assert [r["epoch"] for r in run["resumes"]] == [1, 2]  # epochs done at each resume
    assert all(r["device"] == "cpu" for r in run["resumes"])

