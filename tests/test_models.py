"""hw2lib.nets.models: every registered model trains a step; counts match torchvision, the block
formulas and the pre-refactor numbers; blocks compute what they say; weights load from a local
file / the hub cache, and no download is ever attempted."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from hw2lib.nets import models as M

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnext50_32x4d")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download attempt fails like an offline machine does (and is recorded)."""
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return calls


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub"  # nobody called torch.hub.set_dir
    return home


def _meta_count(builder, *args, **kwargs) -> int:
    """Parameter count of a model built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return M.count_parameters(builder(*args, **kwargs))


# ---------------------------------------------------------------- registry and errors


def test_registry_names():
    names = M.available_models()
    assert names[:5] == ["resnet18", "resnet34", "resnet50", "resnext50_32x4d", "resnext18"]
    dl = [n for n in names if n.startswith("dlresnet18_")]
    assert dl == ["dlresnet18_5x5", "dlresnet18_dilated"]
    assert len(names) == 7


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as err:
        M.build_model("resnet19")
    for name in M.available_models():
        assert name in str(err.value)


@pytest.mark.parametrize(("kwargs", "pattern"), [
    (dict(stem="tiny"), r"unknown stem 'tiny'.*'imagenet', 'small'"),
    (dict(num_classes=0), "num_classes must be a positive int"),
    (dict(pretrained="IMAGENET9K"), r"unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"),
])
def test_bad_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        M.build_model("resnet18", **kwargs)


def test_pretrained_needs_torchvision_arch():
    with pytest.raises(ValueError, match="no ImageNet weights exist for 'resnext18'.*weights=PATH"):
        M.build_model("resnext18", pretrained=True)


# ---------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("stem", M.STEMS)
@pytest.mark.parametrize("name", M.available_models())
def test_forward_backward(name, stem):
    g = torch.Generator().manual_seed(0)
    model = M.build_model(name, 10, stem=stem)
    x = torch.randn(2, 3, 32, 32, generator=g)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    missing = [n for n, gr in grads.items() if gr is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(gr).all() for gr in grads.values())
    dead = [n for n, gr in grads.items() if not gr.abs().sum() > 0]
    assert not dead, f"parameters that get no gradient (unused path?): {dead[:5]}"


@pytest.mark.parametrize(("stem", "side"), [("imagenet", 2), ("small", 8)])
def test_stem_spatial_size_at_layer4(stem, side):
    model = M.build_model("resnet18", 10, stem=stem).eval()
    if stem == "small":
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert isinstance(model.maxpool, nn.Identity)
    else:
        assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
        assert isinstance(model.maxpool, nn.MaxPool2d)
    seen = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    handle.remove()
    assert seen["shape"] == (1, 512, side, side)


def test_torchvision_layer_names():
    with torch.device("meta"):
        r50 = dict(M.build_model("resnet50").named_modules())
        conv = r50["layer4.2.conv3"]
        assert isinstance(conv, nn.Conv2d)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (512, 2048, (1, 1))
        for name in M.available_models():
            mods = dict(M.build_model(name, stem="small").named_modules())
            for key in ("conv1", "bn1", "maxpool", "layer1", "layer4", "avgpool", "fc"):
                assert key in mods, (name, key)
            last = "layer4.2.conv3" if "50" in name else "layer4.1.conv2"
            assert isinstance(mods[last], nn.Conv2d), (name, last)


def test_custom_blocks_structure():
    with torch.device("meta"):
        rx = M.build_model("resnext18")
        d5 = M.build_model("dlresnet18_5x5")
        dd = M.build_model("dlresnet18_dilated")
    c = rx.layer1[0].conv1
    assert (c.groups, c.in_channels, c.out_channels, c.kernel_size) == (32, 64, 128, (3, 3))
    assert rx.layer4[1].conv1.out_channels == 1024 and rx.layer4[1].conv2.groups == 1
    assert not any(hasattr(b, "alt_conv1") for b in rx.modules() if isinstance(b, M.BasicBlock))
    for model, kernel, dilation in ((d5, 5, 1), (dd, 3, 2)):
        blocks = [m for m in model.modules() if isinstance(m, M.BasicBlock)]
        assert len(blocks) == 8
        for block in blocks:
            for main, alt in ((block.conv1, block.alt_conv1), (block.conv2, block.alt_conv2)):
                assert main.kernel_size == (3, 3) and main.dilation == (1, 1)
                assert alt.kernel_size == (kernel, kernel) and alt.dilation == (dilation, dilation)
                pad = dilation * (kernel - 1) // 2
                assert alt.padding == (pad, pad) and alt.stride == main.stride
                assert alt.weight.shape == (main.out_channels, main.in_channels, kernel, kernel)
    assert d5.layer2[0].alt_conv1.stride == (2, 2) and d5.layer2[0].alt_conv2.stride == (1, 1)


def _hand_block(block, x, alt_kernel, alt_dilation):
    """The block's function written out with F.conv2d and explicit kernels/dilations."""
    F = nn.functional

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    s = block.stride
    main = bn(block.bn1, F.conv2d(x, block.conv1.weight, stride=s, padding=1,
                                  groups=block.conv1.groups)).relu()
    out = bn(block.bn2, F.conv2d(main, block.conv2.weight, padding=1))
    if alt_kernel is not None:
        assert block.alt_conv1.weight.shape[-2:] == (alt_kernel, alt_kernel)
        pad = alt_dilation * (alt_kernel - 1) // 2
        alt = bn(block.alt_bn1, F.conv2d(x, block.alt_conv1.weight, stride=s, padding=pad,
                                         dilation=alt_dilation, groups=block.conv1.groups)).relu()
        out = out + bn(block.alt_bn2, F.conv2d(alt, block.alt_conv2.weight, padding=pad,
                                               dilation=alt_dilation))
    identity = x if block.downsample is None else block.downsample(x)
    return (out + identity).relu()


@pytest.mark.parametrize(("name", "alt_kernel", "alt_dilation"), [
    ("resnext18", None, 1), ("dlresnet18_5x5", 5, 1), ("dlresnet18_dilated", 3, 2),
])
@pytest.mark.parametrize("index", ["layer1.1", "layer3.0"])  # identity / projection shortcut
def test_block_forward_equals_hand_computation(name, alt_kernel, alt_dilation, index):
    g = torch.Generator().manual_seed(3)
    model = M.build_model(name).eval()
    block = model.get_submodule(index)
    for bn_ in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
        bn_.running_mean.normal_(generator=g)  # non-trivial statistics: every term counts
        bn_.running_var.uniform_(0.5, 2.0, generator=g)
    x = torch.randn(2, block.conv1.in_channels, 9, 9, generator=g)
    with torch.no_grad():
        got = block(x)
        want = _hand_block(block, x, alt_kernel, alt_dilation)
        wrong = _hand_block(block, x, alt_kernel, alt_dilation + 1) if alt_kernel else None
    side = 9 if block.stride == 1 else 5
    assert got.shape == want.shape == (2, block.conv2.out_channels, side, side)
    assert torch.allclose(got, want, atol=1e-5)
    if wrong is not None:  # the test can tell a path computed with another dilation
        assert not torch.allclose(got, wrong, atol=1e-3)


def test_plain_block_equals_torchvision_basic_block():
    from torchvision.models.resnet import BasicBlock as TVBasicBlock

    down = nn.Sequential(nn.Conv2d(64, 128, 1, 2, bias=False), nn.BatchNorm2d(128))
    theirs = TVBasicBlock(64, 128, 2, down).eval()
    ours = M.BasicBlock(64, 128, 2, down).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize(("kwargs", "pattern"), [
    (dict(alt_kernel=4), "alt_kernel must be None or an odd positive int"),
    (dict(alt_kernel=0), "alt_kernel must be None or an odd positive int"),
    (dict(alt_kernel=3, alt_dilation=0), "alt_dilation must be a positive int"),
    (dict(dilation=2), "does not support dilation > 1"),
])
def test_block_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        M.BasicBlock(64, 64, **kwargs)


# ---------------------------------------------------------------- parameter counts

# Parameter counts at num_classes=10, (stem="imagenet", stem="small"), MEASURED by running the
# pre-refactor hw2lib/models.py (as of commit b15e1b4: separate ResNeXtBasicBlock,
# DualPathBasicBlock, DualPath5x5Block and DualPathDilatedBlock classes) before its blocks were
# merged into the one parameterized `BasicBlock`: the merge must change none of them.
PINNED_COUNTS = {
    "resnet18": (11_181_642, 11_173_962),
    "resnet34": (21_289_802, 21_282_122),
    "resnet50": (23_528_522, 23_520_842),
    "resnext50_32x4d": (23_000_394, 22_992_714),
    "resnext18": (13_028_682, 13_021_002),
    "dlresnet18_5x5": (41_704_522, 41_696_842),
    "dlresnet18_dilated": (22_174_794, 22_167_114),
}


def test_pinned_counts_cover_the_registry():
    assert list(PINNED_COUNTS) == M.available_models()


@pytest.mark.parametrize("name", M.available_models())
def test_parameter_counts_pinned(name):
    imagenet, small = PINNED_COUNTS[name]
    assert _meta_count(M.build_model, name, 10) == imagenet
    assert _meta_count(M.build_model, name, 10, stem="small") == small



@pytest.mark.parametrize("num_classes", [1000, 10])
@pytest.mark.parametrize("name", TORCHVISION_ARCHS)
def test_parameter_counts_equal_torchvision(name, num_classes):
    ours = _meta_count(M.build_model, name, num_classes)
    theirs = _meta_count(getattr(tvm, name), num_classes=num_classes)
    assert ours == theirs
    if num_classes == 1000:  # and the number torchvision publishes with its weights
        assert ours == tvm.get_model_weights(name).DEFAULT.meta["num_params"]
    small = _meta_count(M.build_model, name, num_classes, stem="small")
    assert ours - small == 64 * 3 * (7 * 7 - 3 * 3)


def test_architecture_equals_torchvision():
    with torch.device("meta"):
        ours = M.build_model("resnext50_32x4d", 1000).state_dict()
        theirs = tvm.resnext50_32x4d().state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]


def _expected_resnet18_family(num_classes, stem, *, kind="plain", cardinality=1, base_width=64,
                              k2=0):
    """Parameters implied by the definitions, one conv/BN/linear formula at a time:
    conv = in/groups · out · kh·kw (no bias), BN = 2·channels, linear = in·out + out."""
    def conv(cin, cout, k2_, groups=1):
        return cin // groups * cout * k2_

    def bn(c):
        return 2 * c

    total = conv(3, 64, 49 if stem == "imagenet" else 9) + bn(64)
    inp = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for b in range(2):
            s = stride if b == 0 else 1
            if kind == "resnext":
                width = planes * base_width // 64 * cardinality
                total += conv(inp, width, 9, cardinality) + bn(width)
                total += conv(width, planes, 9) + bn(planes)
            else:
                total += conv(inp, planes, 9) + bn(planes) + conv(planes, planes, 9) + bn(planes)
                if kind == "dual":
                    total += conv(inp, planes, k2) + bn(planes) + conv(planes, planes, k2)
                    total += bn(planes)
            if s != 1 or inp != planes:
                total += conv(inp, planes, 1) + bn(planes)
            inp = planes
    return total + 512 * num_classes + num_classes


def test_formula_reproduces_torchvision_resnet18():
    # the formula itself is checked against an independent implementation
    assert _expected_resnet18_family(1000, "imagenet") == 11_689_512
    assert _expected_resnet18_family(10, "imagenet") == _meta_count(tvm.resnet18, num_classes=10)


@pytest.mark.parametrize("stem", M.STEMS)
@pytest.mark.parametrize(("name", "kw", "expected_kw"), [
    ("resnext18", {}, dict(kind="resnext", cardinality=32, base_width=4)),
    ("dlresnet18_5x5", {}, dict(kind="dual", k2=25)),
    ("dlresnet18_dilated", {}, dict(kind="dual", k2=9)),
])
def test_custom_parameter_counts(name, kw, expected_kw, stem):
    got = _meta_count(M.build_model, name, 10, stem=stem, **kw)
    assert got == _expected_resnet18_family(10, stem, **expected_kw)


def test_count_parameters_trainable_only():
    model = M.build_model("resnet18", 10)
    for p in model.parameters():
        p.requires_grad_(False)
    model.fc.requires_grad_(True)
    assert M.count_parameters(model, trainable_only=True) == 512 * 10 + 10
    assert M.count_parameters(model) == 11_181_642


# ---------------------------------------------------------------- weights


def _random_state(name="resnet18", num_classes=1000, **kw):
    return M.build_model(name, num_classes, **kw).state_dict()


def _assert_backbone_equal(model, state, skip=("fc.weight", "fc.bias")):
    own = model.state_dict()
    for key, val in state.items():
        if key not in skip:
            assert torch.equal(own[key], val), key


def test_local_weights_round_trip(tmp_path, no_network):
    state = _random_state()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    model = M.build_model("resnet18", 10, weights=path, pretrained=True)
    _assert_backbone_equal(model, state)
    assert model.fc.out_features == 10 and model.fc.weight.shape == (10, 512)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # same head size: the head is loaded too
    full = M.build_model("resnet18", 1000, weights=str(path))
    _assert_backbone_equal(full, state, skip=())
    assert no_network == []


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_local_weights_checkpoint_dict_and_prefixes(tmp_path, prefix):
    state = _random_state("resnext18", 10, stem="small")
    ckpt = {"model": {prefix + k: v for k, v in state.items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    model = M.build_model("resnext18", 10, stem="small", weights=tmp_path / "ckpt.pt")
    _assert_backbone_equal(model, state, skip=())


def test_dual_path_weights_round_trip(tmp_path):
    state = _random_state("dlresnet18_dilated", 10, stem="small")
    assert "layer2.0.alt_conv2.weight" in state  # the second path's state_dict keys
    torch.save(state, tmp_path / "dl.pth")
    model = M.build_model("dlresnet18_dilated", 10, stem="small", weights=tmp_path / "dl.pth")
    _assert_backbone_equal(model, state, skip=())
    with pytest.raises(ValueError, match=r"alt_conv1.weight: file \(64, 64, 3, 3\) vs model "
                                         r"\(64, 64, 5, 5\)"):
        M.build_model("dlresnet18_5x5", 10, stem="small", weights=tmp_path / "dl.pth")


def test_local_weights_small_stem_reinitializes_conv1(tmp_path):
    state = _random_state()
    torch.save(state, tmp_path / "r18.pth")
    with pytest.warns(UserWarning, match=r"conv1 .*\(64, 3, 7, 7\).*re-initialized"):
        model = M.build_model("resnet18", 10, stem="small", weights=tmp_path / "r18.pth")
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    _assert_backbone_equal(model, state, skip=("fc.weight", "fc.bias", "conv1.weight"))


def test_local_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        M.build_model("resnet18", weights=tmp_path / "nope.pth")
    torch.save(_random_state("resnet18", stem="small"), tmp_path / "small.pth")
    with pytest.raises(ValueError, match="conv1.weight.*stem='small'"):
        M.build_model("resnet18", weights=tmp_path / "small.pth")
    torch.save(_random_state("dlresnet18_dilated"), tmp_path / "dl.pth")
    with pytest.raises(ValueError, match=r"unexpected \['layer1.0.alt_conv1.weight'"):
        M.build_model("resnet18", weights=tmp_path / "dl.pth")
    torch.save({"lr": 0.1}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        M.build_model("resnet18", weights=tmp_path / "junk.pt")


@pytest.mark.parametrize(("name", "pretrained", "filename"), [
    ("resnet18", True, "resnet18-f37072fd.pth"),
    ("resnet50", True, "resnet50-11ad3fa6.pth"),  # IMAGENET1K_V2
    ("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth"),
])
def test_offline_pretrained_raises_helpful_error(torch_home, no_network, name, pretrained,
                                                 filename):
    with pytest.raises(M.WeightsUnavailable) as err:
        M.build_model(name, 10, pretrained=pretrained)
    msg = str(err.value)
    checkpoints = str(torch_home / "hub" / "checkpoints")
    assert re.search(re.escape(f"put the file {filename}") + r".* in " + re.escape(checkpoints),
                     msg)
    assert "weights=PATH" in msg and "URLError" in msg
    assert len(no_network) == 1 and no_network[0].endswith(filename)
    assert isinstance(err.value, RuntimeError)


def test_pretrained_from_hub_cache(torch_home, no_network):
    state = _random_state()
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet18-f37072fd.pth")
    model = M.build_model("resnet18", 10, pretrained=True)
    _assert_backbone_equal(model, state)
    assert model.fc.out_features == 10
    assert no_network == []
    with pytest.warns(UserWarning, match="re-initialized"):
        small = M.build_model("resnet18", 10, pretrained=True, stem="small")
    assert torch.equal(small.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_pretrained_preprocessing():
    pre = M.pretrained_preprocessing("resnet50")
    assert set(pre) == {"mean", "std", "resize"}
    ref = tvm.ResNet50_Weights.IMAGENET1K_V2.transforms()  # builds a transform, downloads nothing
    assert pre["mean"] == pytest.approx(ref.mean) and pre["std"] == pytest.approx(ref.std)
    assert pre["resize"] == ref.crop_size[0] == 224
    with pytest.raises(ValueError, match="unknown model"):
        M.pretrained_preprocessing("vgg16")
