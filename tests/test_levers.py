"""The best recipe's training levers: mixup/CutMix (hw2lib.train.mixing), EMA of weights (hw2lib.train.ema),
test-time augmentation over the 8 symmetries (engine.predict_tta), and fit with them: exact
resume, best.pt holding the evaluated (EMA) weights."""

import math

import pytest
import torch
from torch import nn

from hw2lib.train import engine as E
from hw2lib.train import schedules as S
from hw2lib.train.ema import EMA
from hw2lib.train.mixing import Mixer, check_mix, cutmix_box, mix_batch
from tests.nets import CrashAfter, Tiny, fit, make_loader


def test_mixup_blends_with_a_permuted_partner_and_is_seeded():
    x = torch.randn(16, 3, 8, 8)
    y = torch.arange(16) % 4
    xm, ya, yb, lam = mix_batch(x, y, "mixup", 0.4, torch.Generator().manual_seed(1))
    assert 0 < lam < 1 and torch.equal(ya, y)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
    assert torch.equal(yb, y[perm])
    again = mix_batch(x, y, "mixup", 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], xm) and again[3] == lam
    other = mix_batch(x, y, "mixup", 0.4, torch.Generator().manual_seed(2))
    assert other[3] != lam


def test_cutmix_pastes_a_box_and_lambda_is_the_uncovered_fraction():
    x = torch.zeros(8, 1, 10, 10)
    x += torch.arange(8).view(8, 1, 1, 1).float()  # each sample one constant value
    y = torch.arange(8)
    xm, _, yb, lam = mix_batch(x, y, "cutmix", 1.0, torch.Generator().manual_seed(0))
    for i in range(8):
        own = (xm[i] == i).float().mean().item()
        partner = (xm[i] == yb[i].item()).float().mean().item()
        if yb[i] != i:
            assert own == pytest.approx(lam) and partner == pytest.approx(1 - lam)
    assert cutmix_box(10, 10, 0.75, 0.5, 0.5) == (3, 8, 3, 8)  # (1-0.75) of 100 = 5×5
    assert cutmix_box(10, 10, 0.75, 0.0, 0.0) == (0, 3, 0, 3)  # clipped at the border
    with pytest.raises(ValueError, match="unknown mix"):
        check_mix("blend", 1.0)
    with pytest.raises(ValueError, match="mix_alpha must be > 0"):
        Mixer("mixup", 0.0, torch.Generator())


def test_both_uses_mixup_and_cutmix():
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6)
    g = torch.Generator().manual_seed(0)
    kinds = set()
    for _ in range(30):
        xm, _, yb, _ = mix_batch(x, y, "both", 1.0, g)
        i = int(torch.nonzero(yb != y)[0])  # a sample with another partner
        own = (xm[i] == x[i]).all(0)  # pixels left as they were
        kinds.add("mixup" if not own.any() else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_mixed_train_step_loss_is_the_lambda_blend():
    torch.manual_seed(0)
    model = Tiny()
    x, y = torch.rand(8, 3, 6, 6), torch.arange(8) % 3
    crit = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(4)
    xm, ya, yb, lam = Mixer("mixup", 1.0, torch.Generator().manual_seed(4))(x, y)  # same draw
    assert 0 < lam < 1 and not torch.equal(ya, yb)
    expected = lam * crit(model(xm), ya) + (1 - lam) * crit(model(xm), yb)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss, _, _ = E.train_step(model, crit, opt, x, y, torch.device("cpu"),
                              mix=Mixer("mixup", 1.0, g))
    torch.testing.assert_close(loss, expected.detach())


def test_ema_follows_the_formula_with_its_warmup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(model, 0.9)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model(torch.randn(4, 3))  # moves BN statistics and num_batches_tracked
    ema.update()
    d = min(0.9, 2 / 11)
    now = model.state_dict()
    for k, v in ema.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, start[k] + (1 - d) * (now[k] - start[k]))
        else:
            assert torch.equal(v, now[k])
    assert not any(p.requires_grad for p in ema.model.parameters())
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.9
    other = EMA(model, 0.9)
    other.load_state_dict(ema.state_dict())
    assert other.steps == 201
    with pytest.raises(ValueError, match="decay"):
        EMA(model, 1.0)


class Symmetric(nn.Module):
    """Global pooling after a 1×1 conv: invariant to the 8 symmetries."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_tta_averages_the_softmax_of_the_eight_views():
    torch.manual_seed(0)
    x, y = torch.rand(10, 3, 6, 6), torch.arange(10) % 3
    loader = make_loader(x, y, batch_size=4, shuffle=False)
    model = Tiny()
    tta, plain, targets = E.predict_tta(model, loader, "cpu")
    ref, ref_y = E.predict(model, loader, "cpu")
    torch.testing.assert_close(plain, ref)
    assert torch.equal(targets, ref_y)
    with torch.no_grad():
        probs = torch.stack([model(v).softmax(1) for v in E.d4_views(x)]).mean(0)
    torch.testing.assert_close(tta.exp(), probs)
    torch.testing.assert_close(tta.logsumexp(1), torch.zeros(10), atol=1e-5, rtol=0)
    # the views are the 8 distinct symmetries of the square
    img = torch.arange(16.0).view(1, 1, 4, 4)
    assert len({tuple(v.flatten().tolist()) for v in E.d4_views(img)}) == 8
    # an invariant model: TTA changes nothing
    sym = Symmetric()
    tta, plain, _ = E.predict_tta(sym, loader, "cpu")
    torch.testing.assert_close(tta.softmax(1), plain.softmax(1))


def image_loaders(seed=0):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 3
    x = torch.rand(24, 3, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    return make_loader(x, y, seed=seed), make_loader(x, y, shuffle=False)


KW = dict(optimizer="sgd", lr=0.05, schedule="onecycle", warmup_epochs=1, device="cpu",
          progress=False, mix="both", mix_alpha=1.0, ema=0.8)


def test_fit_with_mix_and_ema_resumes_exactly_and_saves_the_ema_weights(tmp_path):
    torch.manual_seed(1)
    straight_model = Tiny()
    train, val = image_loaders(seed=3)
    straight = fit(straight_model, train, val, epochs=3, out_dir=tmp_path / "a", **KW)
    torch.manual_seed(1)
    model = Tiny()
    train, val = image_loaders(seed=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(model, CrashAfter(train, 1), val, epochs=3, out_dir=tmp_path / "b", **KW)
    torch.manual_seed(9)
    resumed_model = Tiny()
    train, val = image_loaders(seed=77)
    resumed = fit(resumed_model, train, val, epochs=3, out_dir=tmp_path / "b",
                    **KW)
    for a, b in zip(straight, resumed, strict=True):
        for key in ("lr", "train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == b[key], (a["epoch"], key)
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert last["config"]["mix"] == "both" and last["config"]["ema"] == 0.8
    assert last["ema"]["steps"] == 3 * len(train)
    # the history's val accuracy is the EMA model's ...
    ema_model = Tiny()
    ema_model.load_state_dict(last["ema"]["model"])
    assert E.evaluate(ema_model, val)["acc"] == straight[-1]["val_acc"]
    # ... and best.pt holds the EMA weights of its epoch: they score that epoch's val numbers
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    best_model = Tiny()
    best_model.load_state_dict(best["model"])
    scored = E.evaluate(best_model, val)
    assert scored["acc"] == straight[best["epoch"] - 1]["val_acc"]
    assert scored["loss"] == pytest.approx(straight[best["epoch"] - 1]["val_loss"], rel=1e-6)


def test_onecycle_is_the_warmed_up_cosine_counted_in_steps():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = S.build_scheduler("onecycle", opt, epochs=2, warmup_epochs=1, steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ramp = [(s + 1) / 5 for s in range(4)]
    cos = [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert lrs == pytest.approx(ramp + cos)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # reaches 0 at the end
    with pytest.raises(ValueError, match="steps_per_epoch"):
        S.build_scheduler("onecycle", opt, epochs=2, steps_per_epoch=0)


def test_fit_steps_onecycle_per_batch(tmp_path):
    train, val = image_loaders()
    hist = fit(Tiny(), train, val, epochs=2, device="cpu", progress=False, schedule="onecycle",
                 lr=0.1, warmup_epochs=1, out_dir=tmp_path)
    steps = len(train)
    assert hist[0]["lr"] == pytest.approx(0.1 / (steps + 1))  # the first step's LR
    assert hist[1]["lr"] == pytest.approx(0.1)  # the warm-up is over after epoch 1
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["scheduler"]["last_epoch"] == 2 * steps
