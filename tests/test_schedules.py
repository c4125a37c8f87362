"""hw2lib.train.schedules: one LR rule — a per-step table that `fit` steps after every optimizer step,
the same table `lr_table` and `task_b.lr_curves` return (recorded from the optimizer itself)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from hw2lib.report.plan import format_plan
from hw2lib.study import task_b
from hw2lib.train import engine as E
from hw2lib.train import schedules as S
from hw2lib.train.recipes import resolve
from tests.nets import fit


def loaders(n=24, batch_size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 6, generator=g) + y.view(-1, 1).float()
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    return train, DataLoader(TensorDataset(x, y), batch_size=batch_size)


def tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def recording(train) -> tuple[list[float], list[dict]]:
    """(the LR of every optimizer step `train()` took, read off its optimizer just before the
    step; what it returned: fit's history)."""
    used = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: used.append(float(opt.param_groups[0]["lr"])))
    try:
        hist = train()
    finally:
        handle.remove()
    return used, hist


def fit_recording(*args, **kw) -> tuple[list[float], list[dict]]:
    """`recording` of `tests.nets.fit(*args, **kw)` on the CPU."""
    return recording(lambda: fit(*args, device="cpu", progress=False, **kw))


@pytest.mark.parametrize("schedule, extra", [
    ("none", {}), ("multistep", {"milestones": (1, 3), "gamma": 0.2}),
    ("cosine", {}), ("exponential", {"gamma": 0.5}), ("onecycle", {})])
def test_fit_trains_with_the_table_step_by_step(schedule, extra):
    train, val = loaders()  # 6 steps an epoch
    kw = dict(lr=0.1, epochs=4, warmup_epochs=1, **extra)
    used, hist = fit_recording(tiny(), train, val, schedule=schedule, **kw)
    table = S.lr_table(schedule, steps_per_epoch=len(train), **kw)
    assert len(used) == len(table) == 4 * len(train)
    assert used == table  # exactly: the same closed form, stepped the same way
    assert [h["lr"] for h in hist] == table[::len(train)]  # history: each epoch's first step
    if schedule != "onecycle":  # per-epoch schedules: constant within an epoch
        for e in range(4):
            assert len(set(table[e * 6:(e + 1) * 6])) == 1, e
        assert table[::6] == S.lr_table(schedule, **kw)  # = the per-epoch table


def test_lr_curves_are_the_lrs_fit_uses():
    epochs, steps = 5, 3
    train, val = loaders(n=12)  # 3 steps an epoch
    per_step = task_b.lr_curves(epochs, batch_size=4, steps_per_epoch=steps)
    per_epoch = task_b.lr_curves(epochs, batch_size=4)
    assert set(per_step) == {"multistep", "cosine", "exponential"}
    for name in task_b.SCHEDULE_RUNS:  # fit given the recipe run_experiment gives it
        c = resolve(task_b.with_epochs(task_b.experiment(name), epochs), batch_size=4, seed=0)
        used, _ = recording(lambda c=c: E.fit(tiny(), (train, val), c, device="cpu",
                                              progress=False))
        assert used == per_step[c["schedule"]], name
        assert used[::steps] == per_epoch[c["schedule"]], name
        assert len(set(used)) > 1, name  # a schedule, not a constant


def test_onecycle_with_max_steps_counts_the_capped_steps(tmp_path):
    """The smoke path: `max_steps` caps an epoch, and the warm-up + cosine is laid over the
    steps actually taken (ramp over the first epoch's 2 steps, cosine to 0 over the next 2)."""
    train, val = loaders(n=24)  # 6 batches, capped at 2
    used, hist = fit_recording(tiny(), train, val, epochs=2, lr=0.3, schedule="onecycle",
                               warmup_epochs=1, max_steps=2, out_dir=tmp_path)
    ramp = [0.3 * (s + 1) / 3 for s in range(2)]
    cos = [0.3 * (1 + math.cos(math.pi * t / 2)) / 2 for t in range(2)]
    assert used == pytest.approx(ramp + cos, rel=1e-12)
    assert used == S.lr_table("onecycle", lr=0.3, epochs=2, warmup_epochs=1, steps_per_epoch=2)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["scheduler"]["last_epoch"] == 4
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert [h["lr"] for h in hist] == [used[0], used[2]]


def test_build_scheduler_needs_the_steps_of_an_epoch():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        S.build_scheduler("cosine", opt, epochs=3, steps_per_epoch=0)
    with pytest.raises(TypeError, match="steps_per_epoch"):
        S.build_scheduler("cosine", opt, epochs=3)  # no default: the table needs it


def test_fit_needs_a_loader_with_a_length():
    train, val = loaders()
    with pytest.raises(ValueError, match="len"):
        fit(tiny(), (b for b in train), val, epochs=1, device="cpu", progress=False)


def test_plan_names_onecycle_for_what_it_is():
    """The config value stays "onecycle" (run identities unchanged); the plan says what it is."""
    row = dict(notebook="B-ablation", **resolve(task_b.experiment("best"), seed=0),
               n_train=16200, long_tail=None, image_steps=None)
    text = format_plan([row])
    assert "onecycle (warm-up + cosine, per step) (+5 warm-up), 100 ep" in text
