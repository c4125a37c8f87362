"""hw2lib.nets.losses against closed forms computed here by hand (float64), plus the error cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hw2lib.nets import losses as L

COUNTS = [500, 120, 30, 6]
C = len(COUNTS)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(16, C, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, C, (16,), generator=g)
    return logits, targets


def _softmax_nll(logits, targets, weights_per_class=None):
    """-log( w_y e^{z_y} / Σ_j w_j e^{z_j} ) per sample, written out by hand."""
    z = logits.detach().to(torch.float64)
    w = torch.ones(z.shape[1], dtype=torch.float64) if weights_per_class is None else \
        torch.as_tensor(weights_per_class, dtype=torch.float64)
    e = w * torch.exp(z - z.max(1, keepdim=True).values)
    return -torch.log(e[torch.arange(len(z)), targets] / e.sum(1))


def _as64(x):
    return x.detach().to(torch.float64)


def test_available_losses():
    assert L.available_losses() == ["ce", "balanced_softmax", "logit_adjusted", "class_balanced",
                                    "focal"]


def test_ce_and_label_smoothing(batch):
    logits, y = batch
    assert torch.allclose(_as64(L.build_loss("ce")(logits, y)), _softmax_nll(logits, y).mean())
    eps = 0.1
    logp = torch.log_softmax(_as64(logits), 1)
    hand = ((1 - eps) * -logp[torch.arange(len(y)), y] + eps * -logp.mean(1)).mean()
    got = L.build_loss("ce", class_counts=COUNTS, label_smoothing=eps)(logits, y)
    assert torch.allclose(_as64(got), hand)


def test_balanced_softmax_equal_counts_is_ce(batch):
    logits, y = batch
    bs = L.build_loss("balanced_softmax", class_counts=[37] * C)(logits, y)
    assert torch.allclose(bs, F.cross_entropy(logits, y), atol=1e-12)


def test_balanced_softmax_closed_form(batch):
    logits, y = batch
    got = L.build_loss("balanced_softmax", class_counts=COUNTS)(logits, y)
    assert torch.allclose(_as64(got), _softmax_nll(logits, y, COUNTS).mean(), atol=1e-6)
    # and it differs from plain CE when counts differ (the test can fail)
    assert not torch.allclose(got, F.cross_entropy(logits, y), atol=1e-3)


def test_logit_adjusted(batch):
    logits, y = batch
    la1 = L.build_loss("logit_adjusted", class_counts=COUNTS)(logits, y)
    bs = L.build_loss("balanced_softmax", class_counts=COUNTS)(logits, y)
    assert torch.allclose(la1, bs, atol=1e-6)
    la0 = L.build_loss("logit_adjusted", class_counts=COUNTS, tau=0.0)(logits, y)
    assert torch.allclose(la0, F.cross_entropy(logits, y), atol=1e-6)
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    la2 = L.build_loss("logit_adjusted", class_counts=COUNTS, tau=2.0)(logits, y)
    assert torch.allclose(_as64(la2), _softmax_nll(logits, y, prior**2).mean(), atol=1e-6)


def test_class_balanced_weights_and_loss(batch):
    logits, y = batch
    beta = 0.999
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    w = [C * r / sum(raw) for r in raw]
    loss = L.build_loss("class_balanced", class_counts=COUNTS, beta=beta)
    assert torch.allclose(_as64(loss.class_weights), torch.tensor(w, dtype=torch.float64))
    assert sum(w) == pytest.approx(C) and w[-1] > w[0]
    hand = (torch.tensor(w, dtype=torch.float64)[y] * _softmax_nll(logits, y)).mean()
    assert torch.allclose(_as64(loss(logits, y)), hand, atol=1e-6)
    # default β=0.9999 keeps precision for large counts
    big = L.build_loss("class_balanced", class_counts=[20000, 10])
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in (20000, 10)]
    assert big.class_weights.tolist() == pytest.approx([2 * r / sum(raw) for r in raw], rel=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1e-12])
def test_class_balanced_beta_to_zero_is_ce(batch, beta):
    logits, y = batch
    loss = L.build_loss("class_balanced", class_counts=COUNTS, beta=beta)
    assert torch.allclose(loss.class_weights, torch.ones(C, dtype=loss.class_weights.dtype))
    assert torch.allclose(_as64(loss(logits, y)), _as64(F.cross_entropy(logits, y)), atol=1e-6)


def test_focal(batch):
    logits, y = batch
    assert torch.allclose(L.build_loss("focal", gamma=0.0)(logits, y), F.cross_entropy(logits, y),
                          atol=1e-12)
    nll = _softmax_nll(logits, y)
    p = torch.exp(-nll)
    hand = ((1 - p) ** 2 * nll).mean()
    assert torch.allclose(_as64(L.build_loss("focal")(logits, y)), hand, atol=1e-6)
    alpha = [0.1, 0.2, 0.3, 0.4]
    hand_a = (torch.tensor(alpha, dtype=torch.float64)[y] * (1 - p) ** 0.5 * nll).mean()
    got = L.build_loss("focal", gamma=0.5, alpha=alpha)(logits, y)
    assert torch.allclose(_as64(got), hand_a, atol=1e-6)


@pytest.mark.parametrize("name", L.available_losses())
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_gradients_finite(name, scale):
    g = torch.Generator().manual_seed(1)
    logits = (scale * torch.randn(8, C, generator=g)).requires_grad_()
    y = torch.randint(0, C, (8,), generator=g)
    kw = dict(gamma=0.5) if name == "focal" else {}
    loss = L.build_loss(name, class_counts=COUNTS, **kw)(logits, y)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_focal_confident_correct_gradient_finite():
    logits = torch.tensor([[60.0, 0.0, 0.0, 0.0]], requires_grad=True)  # p_y == 1 in float32
    loss = L.build_loss("focal", gamma=0.5)(logits, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("name", L.available_losses())
def test_reductions(batch, name, reduction):
    logits, y = batch
    mean = L.build_loss(name, class_counts=COUNTS)(logits, y)
    other = L.build_loss(name, class_counts=COUNTS, reduction=reduction)(logits, y)
    if reduction == "none":
        assert other.shape == (16,) and torch.allclose(other.mean(), mean)
    else:
        assert torch.allclose(other, 16 * mean)


@pytest.mark.parametrize("name", ["balanced_softmax", "logit_adjusted", "class_balanced", "focal"])
def test_buffers_follow_dtype(batch, name):
    loss = L.build_loss(name, class_counts=COUNTS)
    buffers = dict(loss.named_buffers())
    assert "class_counts" in buffers and buffers["class_counts"].dtype == torch.float32
    assert loss.class_counts.tolist() == COUNTS
    loss64 = loss.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in loss64.buffers())
    logits, y = batch
    out = loss64(logits, y)
    assert out.dtype == torch.float64
    if name == "balanced_softmax":  # float64 all the way: tight agreement with the closed form
        assert torch.allclose(out, _softmax_nll(logits, y, COUNTS).mean(), atol=1e-12)
    assert "class_counts" in loss.state_dict()


@pytest.mark.parametrize(("counts", "pattern"), [
    ([5, 0, 3], r"class_counts\[1\] = 0\.0.*no training samples"),
    ([5, 3, -2], r"class_counts\[2\] = -2\.0"),
    ([float("nan"), 3, 1], r"class_counts\[0\] = nan"),
    ([4, float("inf"), 1], r"class_counts\[1\] = inf"),
    ([[1, 2], [3, 4]], "1-D"),
    ([], "non-empty"),
    ({"a": 1, "b": 2}, "not a mapping"),
    (["x", "y"], "sequence of numbers"),
])
def test_bad_counts(counts, pattern):
    with pytest.raises(ValueError, match=pattern):
        L.build_loss("balanced_softmax", class_counts=counts)
    with pytest.raises(ValueError, match=pattern):
        L.posthoc_logit_adjust(torch.zeros(2, 3), counts)


@pytest.mark.parametrize("name", ["balanced_softmax", "logit_adjusted", "class_balanced"])
def test_counts_required(name):
    with pytest.raises(ValueError, match="needs class_counts"):
        L.build_loss(name)


def test_wrong_number_of_classes(batch):
    logits, y = batch
    for name in L.available_losses():
        with pytest.raises(ValueError, match="logits have 4 classes but class_counts has 3"):
            L.build_loss(name, class_counts=[1, 2, 3])(logits, y)


def test_unknown_name_and_options():
    with pytest.raises(ValueError, match="unknown loss 'ldam'") as err:
        L.build_loss("ldam")
    for name in L.available_losses():
        assert name in str(err.value)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['beta'\] for loss 'focal'.*gamma"):
        L.build_loss("focal", beta=0.9)
    with pytest.raises(ValueError, match=r"\['tau'\].*'ce'.*label_smoothing"):
        L.build_loss("ce", tau=1.0)
    with pytest.raises(ValueError, match="beta must be in"):
        L.build_loss("class_balanced", class_counts=COUNTS, beta=1.0)
    with pytest.raises(ValueError, match="gamma must be"):
        L.build_loss("focal", gamma=-1)
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        L.build_loss("ce", reduction="avg")
    with pytest.raises(ValueError, match="alpha must be None or one weight per class"):
        L.build_loss("focal", alpha=0.25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prior(dtype):
    counts = torch.tensor(COUNTS, dtype=dtype)
    got = L._log_prior(counts)
    assert got.dtype == dtype and got.shape == (C,)
    hand = [math.log(n / sum(COUNTS)) for n in COUNTS]
    assert got.tolist() == pytest.approx(hand, rel=1e-6)
    assert got.exp().sum().item() == pytest.approx(1.0, rel=1e-6)


def test_the_prior_adjusted_losses_are_cross_entropy_of_shifted_logits(batch):
    """balanced_softmax = CE(logits + log π), logit_adjusted(τ) = CE(logits + τ log π) and the
    post-hoc adjustment = logits − τ log π, with π the class frequencies (by hand here)."""
    logits, y = batch
    log_pi = torch.tensor([math.log(n / sum(COUNTS)) for n in COUNTS], dtype=logits.dtype)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(L.build_loss("balanced_softmax", class_counts=COUNTS)(logits, y),
                               ce(logits + log_pi, y))
    torch.testing.assert_close(
        L.build_loss("logit_adjusted", class_counts=COUNTS, tau=0.5)(logits, y),
        ce(logits + 0.5 * log_pi, y))
    torch.testing.assert_close(L.posthoc_logit_adjust(logits, COUNTS), logits - log_pi)


@pytest.mark.parametrize(("alpha", "pattern"), [
    ([1.0, 0.0, 1.0, 1.0], r"alpha\[1\] = 0\.0: every class needs a positive, finite value$"),
    ({"a": 1.0}, r"alpha must be a sequence ordered by class index, not a mapping"),
])
def test_bad_alpha_message_speaks_of_alpha(alpha, pattern):
    with pytest.raises(ValueError, match=pattern):
        L.build_loss("focal", alpha=alpha)


def test_posthoc_logit_adjust():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, C, generator=g)
    out = L.posthoc_logit_adjust(logits, COUNTS, tau=0.5)
    hand = [[z - 0.5 * math.log(n / sum(COUNTS)) for z, n in zip(row, COUNTS, strict=True)]
            for row in logits.tolist()]
    assert out.dtype == logits.dtype
    assert torch.allclose(out, torch.tensor(hand), atol=1e-6)
    # tied logits: the adjustment favours the rarest class
    assert L.posthoc_logit_adjust(torch.zeros(1, C), COUNTS).argmax().item() == C - 1
    assert torch.equal(L.posthoc_logit_adjust(logits, COUNTS, tau=0.0), logits)
    with pytest.raises(ValueError, match="logits have 4 classes"):
        L.posthoc_logit_adjust(logits, [1, 2, 3])
