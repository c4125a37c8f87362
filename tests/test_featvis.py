"""Tests of hw2lib.nets.featvis: DeepDream and activation maximization properties on a small random-init
ResNet-18 (seconds on 2 CPU cores); channel_activations and choose_channels against a tiny model
whose channel activations are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from hw2lib.core.constants import IMAGENET_MEAN as MEAN
from hw2lib.core.constants import IMAGENET_STD as STD
from hw2lib.nets import featvis
from hw2lib.nets.hooks import capture

LAYER = "layer4.1.conv2"  # ResNet-18's last 3×3 conv (ResNet-50's analogue: layer4.2.conv3)


# ------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = torchvision.models.resnet18(num_classes=10)
    return m.eval()


def _hooks(m):
    return sum(len(mod._forward_hooks) for mod in m.modules())


def _layer_output(m, layer, images):
    """`layer`'s output for a list of [0,1] images (eval mode, the model's mode restored)."""
    norm = featvis._normalizer(MEAN, STD, "cpu")
    was = m.training
    m.eval()
    with torch.no_grad(), capture(m, layer, detach=True) as cap:
        m(norm(torch.stack(list(images))))
    m.train(was)
    return cap.output


def _channel_means(m, layer, images):
    """Mean activation per channel (rows: images)."""
    return _layer_output(m, layer, images).mean((2, 3))


# ------------------------------------------------------------------------------------------------
# hooks


def test_unknown_layer_is_a_clear_error_and_leaves_no_hook(model):
    with pytest.raises(ValueError, match="no layer 'layer9.2.conv3'.*Did you mean"):
        featvis.deepdream(model, torch.rand(3, 32, 32), "layer9.2.conv3", steps=1)
    assert _hooks(model) == 0


# ------------------------------------------------------------------------------------------------
# DeepDream


def _snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_deepdream_amplifies_channel_and_leaves_model_alone(model):
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = _snapshot(model)
    flags = [p.requires_grad for p in model.parameters()]
    model.train()  # a model in training mode: BN statistics must not move, the mode must return
    try:
        out = featvis.deepdream(model, img, LAYER, channels=[3], octaves=2, steps=8, jitter=2,
                            generator=torch.Generator().manual_seed(0))
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    assert out.shape == img.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, img)
    a = _channel_means(model, LAYER, [img, out])
    d = a[1] - a[0]
    assert d[3] > 0.2 and d[3] > d.mean() + 2 * d.std()  # that channel, not all of them
    # model untouched: weights and BN statistics, requires_grad flags, no .grad, no hook
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert _hooks(model) == 0


def test_deepdream_all_channels_seeded_uint8_and_size(model):
    img = (torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    kw = dict(octaves=2, steps=4, jitter=2, size=48)
    a = featvis.deepdream(model, img, LAYER, generator=torch.Generator().manual_seed(5), **kw)
    b = featvis.deepdream(model, img, LAYER, generator=torch.Generator().manual_seed(5), **kw)
    assert a.shape == (3, 48, 48)
    torch.testing.assert_close(a, b)
    big = featvis.resize_image(img, 48)
    energy = _layer_output(model, LAYER, [big, a]).pow(2).mean((1, 2, 3))
    assert energy[1] > 1.2 * energy[0]  # channels=None: the mean squared activation grows


def test_deepdream_bad_channel_message_and_hook_removed(model):
    with pytest.raises(ValueError, match="has 512 channels"):
        featvis.deepdream(model, torch.rand(3, 32, 32), LAYER, channels=[600], octaves=1, steps=1)
    assert _hooks(model) == 0
    with pytest.raises(ValueError, match="3×H×W"):
        featvis.deepdream(model, torch.rand(1, 32, 32), LAYER, steps=1)


# ------------------------------------------------------------------------------------------------
# activation maximization


@pytest.mark.parametrize("param", ["fft", "pixel"])
@pytest.mark.parametrize("from_tile", [False, True], ids=["noise", "tile"])
def test_activation_maximization_raises_target_channel(model, param, from_tile):
    ch = 17
    init = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) if from_tile \
        else "noise"
    kw = dict(init=init, size=None if from_tile else 64, param=param, lr=0.05, jitter=2, seed=3)
    start, tr0 = featvis.activation_maximization(model, LAYER, ch, steps=0, **kw)
    img, trace = featvis.activation_maximization(model, LAYER, ch, steps=30, **kw)
    assert tr0 == [] and len(trace) == 30 and np.isfinite(trace).all()
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and img.device.type == "cpu"
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    if from_tile:  # starts from the tile itself (FFT: up to the sigmoid clamp)
        torch.testing.assert_close(start, init, atol=2e-3, rtol=0)
    a = _channel_means(model, LAYER, [start, img])
    d = a[1] - a[0]
    assert d[ch] > 0.2, f"channel {ch} mean activation rose only {float(d[ch]):.3f}"
    assert d[ch] > d.mean() + 2 * d.std()  # targeted: far more than a typical channel
    assert _hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_activation_maximization_deterministic_and_errors(model):
    kw = dict(size=(32, 40), steps=3, param="pixel", jitter=2, seed=7)
    a, ta = featvis.activation_maximization(model, LAYER, 5, **kw)
    b, tb = featvis.activation_maximization(model, LAYER, 5, **kw)
    c, _ = featvis.activation_maximization(model, LAYER, 5, **{**kw, "seed": 8})
    assert a.shape == (3, 32, 40)
    torch.testing.assert_close(a, b)
    assert ta == tb and not torch.equal(a, c)
    with pytest.raises(ValueError, match="'fft' or 'pixel'"):
        featvis.activation_maximization(model, LAYER, 0, param="dct", steps=1)
    with pytest.raises(ValueError, match="has 512 channels"):
        featvis.activation_maximization(model, LAYER, 512, size=32, steps=1)
    with pytest.raises(ValueError, match="has 512 channels"):
        featvis.activation_maximization(model, LAYER, -1, size=32, steps=0)
    with pytest.raises(ValueError, match="init must be 'noise'"):
        featvis.activation_maximization(model, LAYER, 0, init="tile", steps=1)
    with pytest.raises(ValueError, match="model first"):
        featvis.activation_maximization(model, LAYER, 0, size=32, steps=1, device="meta")
    assert _hooks(model) == 0


def test_fft_parameterization_round_trip():
    img = torch.rand(1, 3, 12, 9, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    for decorrelate in (True, False):
        f = featvis._FFTImage(12, 9, "cpu", decorrelate)
        torch.testing.assert_close(f.image(f.from_image(img)), img, atol=1e-4, rtol=0)



# ------------------------------------------------------------------------------------------------
# channel_activations and choose_channels


class Known(nn.Module):
    """A layer `feat` whose channels are known: 0 = R, 1 = G, 2 = B, 3 = R + G + B, 4 = 3.0 (of the
    normalized image); a head whose logits are (channel 0's mean, 0). Dropout first: in training
    mode it would change every activation, so exact values show that eval mode was used."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.feat = nn.Conv2d(3, 5, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 2)
        w = torch.zeros(5, 3, 1, 1)
        w[0, 0] = w[1, 1] = w[2, 2] = 1.0
        w[3] = 1.0
        with torch.no_grad():
            self.feat.weight.copy_(w)
            self.feat.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0]))
            self.fc.weight.zero_()
            self.fc.weight[0, 0] = 1.0
            self.fc.bias.zero_()
        self.seen = None

    def forward(self, x):
        self.seen = tuple(x.shape)
        return self.fc(self.pool(self.feat(self.drop(x))).flatten(1))


def _no_hooks(m):
    return all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


def test_channel_activations_known_values_resized_and_normalized():
    m = Known().train()
    img = torch.tensor([0.2, 0.6, 1.0])[:, None, None].expand(3, 4, 4)  # a flat colour
    act, prob = featvis.channel_activations(m, img, "feat", size=8, mean=(0.5, 0.5, 0.5),
                                            std=(0.5, 0.25, 0.1))
    assert m.seen == (1, 3, 8, 8)  # upsampled to size × size before the model
    # normalized pixel: ((0.2-0.5)/0.5, (0.6-0.5)/0.25, (1.0-0.5)/0.1) = (-0.6, 0.4, 5.0)
    assert act.shape == (5,) and act.dtype == torch.float32 and act.device.type == "cpu"
    torch.testing.assert_close(act, torch.tensor([-0.6, 0.4, 5.0, 4.8, 3.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(prob, torch.softmax(torch.tensor([-0.6, 0.0]), 0), atol=1e-6,
                               rtol=0)
    assert m.training and m.drop.training  # modes restored
    assert _no_hooks(m)
    assert featvis.choose_channels(act, "top", k=2) == (2, [2, 3])


def test_channel_activations_averages_over_positions_and_reads_uint8():
    m = Known()
    img = torch.zeros(3, 6, 6, dtype=torch.uint8)
    img[0, :, 3:] = 255  # red: left half 0, right half 1 -> mean 0.5
    img[1, :2] = 255  # green: top third 1 -> mean 1/3
    act, _ = featvis.channel_activations(m, img, "feat", size=6, mean=(0, 0, 0), std=(1, 1, 1))
    torch.testing.assert_close(act, torch.tensor([0.5, 1 / 3, 0.0, 0.5 + 1 / 3, 3.0]),
                               atol=1e-6, rtol=0)
    assert m.seen == (1, 3, 6, 6)
    # a layer without positions (N×C): its values themselves; here fc's logits (R's mean, 0)
    fc, prob = featvis.channel_activations(m, img, "fc", size=6, mean=(0, 0, 0), std=(1, 1, 1))
    torch.testing.assert_close(fc, torch.tensor([0.5, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(prob, torch.softmax(fc, 0))


def test_channel_activations_errors_leave_no_hook():
    m = Known()
    img = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match="no layer 'fet'.*Did you mean: feat"):
        featvis.channel_activations(m, img, "fet", size=4, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="model first"):
        featvis.channel_activations(m, img, "feat", size=4, mean=MEAN, std=STD, device="meta")
    with pytest.raises(ValueError, match="3×H×W"):
        featvis.channel_activations(m, torch.rand(4, 4), "feat", size=4, mean=MEAN, std=STD)
    assert _no_hooks(m)


ACT = torch.tensor([0.1, 0.9, -1.0, 0.5, 0.7])


def test_choose_channels_top_and_int():
    assert featvis.choose_channels(torch.arange(8.0)) == (7, [7, 6, 5, 4, 3, 2])  # "top", k=6
    assert featvis.choose_channels(ACT, k=3) == (1, [1, 4, 3])  # top-k, largest first
    assert featvis.choose_channels(ACT, "top", k=5) == (1, [1, 4, 3, 0, 2])
    assert featvis.choose_channels(ACT, 3, k=1) == (3, [1])
    assert featvis.choose_channels(ACT.numpy(), np.int64(2), k=[4, 0]) == (2, [4, 0])
    assert featvis.choose_channels(ACT.tolist(), 0, k=(2,)) == (0, [2])
    chosen, grid = featvis.choose_channels(ACT, np.int64(4), k=np.int64(2))
    assert type(chosen) is int and all(type(c) is int for c in grid) and grid == [1, 4]


@pytest.mark.parametrize(("channel", "k", "match"), [
    (5, 2, r"channel=5 out of range: the layer has 5 channels \(0\.\.4\)"),
    (-1, 2, r"channel=-1 out of range: the layer has 5 channels"),
    ("max", 2, r"'top' or a channel index in 0\.\.4, got 'max'"),
    (True, 2, "channel must be a channel index"),
    (1.0, 2, "channel must be a channel index"),
    ("top", 6, r"k=6 top channels asked for, but the layer has 5 channels; pass 1\.\.5"),
    ("top", 0, "k=0 top channels"),
    ("top", [4, 7], r"k=7 out of range: the layer has 5 channels \(0\.\.4\)"),
    ("top", [], "empty list"),
    ("top", "3", "number of top channels or a list"),
])
def test_choose_channels_errors_name_the_range(channel, k, match):
    with pytest.raises(ValueError, match=match):
        featvis.choose_channels(ACT, channel, k=k)


def test_choose_channels_needs_one_value_per_channel():
    with pytest.raises(ValueError, match="1-D"):
        featvis.choose_channels(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="1-D"):
        featvis.choose_channels(torch.zeros(0))


def test_resize_image_sizes_and_range():
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert featvis.resize_image(img, 16).shape == (3, 16, 16)
    out = featvis.resize_image(img, (4, 6))
    assert out.shape == (3, 4, 6) and out.min() >= 0 and out.max() <= 1
    same = featvis.resize_image(img, 8)
    torch.testing.assert_close(same, img)
    assert same is not img  # a copy, not the caller's tensor
    flat = featvis.resize_image(torch.full((3, 5, 5), 0.25), 13)
    torch.testing.assert_close(flat, torch.full((3, 13, 13), 0.25))
