"""The networks of the study: torchvision's ResNets, a home-made ResNeXt-18 and two dual-path
ResNet-18s ("DLResNet"), all built by name from one plain dict registry.

Every model is an instance of torchvision's `ResNet` class (the custom ones only plug in their own
block), so all of them share torchvision's attribute names — `conv1, bn1, relu, maxpool,
layer1..layer4, avgpool, fc` and inside a block `conv1, bn1, conv2, bn2[, conv3, bn3], downsample`.
A layer is therefore addressed the same way everywhere: `"layer4.2.conv3"` is ResNet-50's last 1×1
conv, `"layer4.1"` the last block of every ResNet-18 variant, `"fc"` the classifier.

    build_model("resnet50", 10, pretrained=True)              # ImageNet weights, new 10-class head
    build_model("resnet18", 10, weights="r18.pth")            # a local state dict instead
    build_model("resnext18", 10, stem="small", cardinality=16, base_width=8)
    build_model("dlresnet18_5x5", 10, stem="small")

Stems: "imagenet" is torchvision's 7×7 stride-2 conv + 3×3 stride-2 max-pool (a 64×64 tile reaches
`layer4` as 2×2); "small" is a 3×3 stride-1 conv and no max-pool (`maxpool` is `nn.Identity`), so
a 64×64 tile reaches `layer4` as 8×8.

Nothing here downloads or builds anything at import time.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STEMS",
    "DualPathBasicBlock",
    "ResNeXtBasicBlock",
    "WeightsUnavailable",
    "available_models",
    "build_model",
    "count_parameters",
    "pretrained_preprocessing",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED_INPUT_SIZE = 224  # the resolution torchvision's ImageNet weights were evaluated at
STEMS = ("imagenet", "small")


class WeightsUnavailable(RuntimeError):
    """`pretrained=True` but the ImageNet weights are neither in the torch hub cache nor
    downloadable (no network). The message says where to put the file or how to pass it."""


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class ResNeXtBasicBlock(nn.Module):
    """A ResNet BasicBlock (two 3×3 convs, expansion 1) with ResNeXt's aggregated transform.

    ``conv1`` is a *grouped* 3×3 conv ``inplanes → width`` with ``groups=cardinality`` and
    ``width = int(planes * base_width / 64) * cardinality`` (timm's/torchvision's ResNeXt rule);
    ``conv2`` is a dense 3×3 conv ``width → planes``. This is split-transform-merge with two
    layers: the input channels are split into `cardinality` groups, each group is transformed
    by its own 3×3 conv into `width / cardinality` channels, and the dense ``conv2`` is the sum
    over groups of one projection per group (the merge). (Grouping ``conv2`` too would leave the
    groups unmixed until the next block; the ResNeXt paper notes a depth-2 block whose both layers
    are aggregated is just a wide dense block.)

    torchvision's ``BasicBlock`` refuses ``groups != 1``, hence this block. It has torchvision's
    constructor signature so that torchvision's ``ResNet`` can stack it (``groups`` is the
    cardinality, ``base_width`` torchvision's ``width_per_group``).

    Parameters of one block: ``inplanes/cardinality·width·9 + 2·width + width·planes·9 + 2·planes``
    (+ ``inplanes·planes + 2·planes`` for a projection shortcut).
    """

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm_layer=None):
        super().__init__()
        if dilation != 1:
            raise ValueError("ResNeXtBasicBlock does not support dilation > 1")
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 3, stride, 1, groups=groups, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DualPathBasicBlock(nn.Module):
    """A ResNet BasicBlock with two parallel residual paths that differ in their kernel.

    * the usual path, torchvision's names: ``conv1`` (3×3, stride) → ``bn1`` → ReLU → ``conv2``
      (3×3) → ``bn2``;
    * the second path, same shape with another kernel: ``alt_conv1`` (stride) → ``alt_bn1`` →
      ReLU → ``alt_conv2`` → ``alt_bn2``; the kernel is the subclass's ``alt_kernel`` and
      ``alt_dilation`` (5×5, or 3×3 with dilation 2: both see 5×5 per conv, 9×9 per block,
      against the 3×3 path's 5×5).

    Merge: ``out = relu(bn2(path3x3) + alt_bn2(path_alt) + shortcut(x))`` — the two BN'd path
    outputs are *summed* before the residual addition. Why a sum rather than concat + 1×1: the
    sum keeps the block's width and the shortcut unchanged (the rest of ResNet-18, downsample
    and fc included, stays identical, so the ablation compares kernels, not extra depth or a
    wider head); it adds no parameters besides the second path's own convs and BNs (a 1×1 merge
    would add ``2·planes·planes`` per block and one more layer); each path keeps its own BN, so
    each learns its own scale and can be switched off by its BN weight (as in Selective-Kernel
    and ACNet/RepVGG blocks, which also sum BN'd branches of different kernels).

    Cost: the second path's convs have ``alt_kernel²/9`` times the 3×3 path's parameters and
    multiply-adds: 25/9 ≈ 2.8× for 5×5 (the block costs ≈ 3.8× a BasicBlock), 1× for the
    dilated 3×3 (≈ 2×). Parameters of one block: ``(9 + k²)·(inplanes·planes + planes²) +
    8·planes`` (+ ``inplanes·planes + 2·planes`` for a projection shortcut), ``k² = 25`` or ``9``.
    """

    expansion = 1
    alt_kernel = 5
    alt_dilation = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm_layer=None):
        super().__init__()
        if groups != 1 or base_width != 64 or dilation != 1:
            raise ValueError("DualPathBasicBlock supports only groups=1, base_width=64, dilation=1")
        norm_layer = norm_layer or nn.BatchNorm2d
        k, d = self.alt_kernel, self.alt_dilation
        pad = d * (k - 1) // 2
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.alt_conv1 = nn.Conv2d(inplanes, planes, k, stride, pad, dilation=d, bias=False)
        self.alt_bn1 = norm_layer(planes)
        self.alt_conv2 = nn.Conv2d(planes, planes, k, 1, pad, dilation=d, bias=False)
        self.alt_bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)
        nn.init.zeros_(self.alt_bn2.weight)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        a = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        b = self.alt_bn2(self.alt_conv2(self.relu(self.alt_bn1(self.alt_conv1(x)))))
        return self.relu(a + b + identity)


class DualPath5x5Block(DualPathBasicBlock):
    """Dual-path BasicBlock whose second path uses 5×5 convs."""

    alt_kernel = 5
    alt_dilation = 1


class DualPathDilatedBlock(DualPathBasicBlock):
    """Dual-path BasicBlock whose second path uses 3×3 convs with dilation 2 (5×5 field of view
    at the parameter cost of a 3×3)."""

    alt_kernel = 3
    alt_dilation = 2


# --------------------------------------------------------------------------------------------
# Registry: name -> how to build it. torchvision archs go through torchvision's own builders
# (so their parameters equal torchvision's exactly); the others plug a block into its ResNet.
# --------------------------------------------------------------------------------------------

_MODELS: dict[str, dict] = {
    "resnet18": dict(torchvision="resnet18", weights="ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34": dict(torchvision="resnet34", weights="ResNet34_Weights.IMAGENET1K_V1"),
    "resnet50": dict(torchvision="resnet50", weights="ResNet50_Weights.IMAGENET1K_V2"),
    "resnext50_32x4d": dict(torchvision="resnext50_32x4d",
                            weights="ResNeXt50_32X4D_Weights.IMAGENET1K_V2"),
    # ResNeXt-18 "32x4d": 32 groups, 4 channels per group at layer1 (width 128, 256, 512, 1024)
    "resnext18": dict(block=ResNeXtBasicBlock, layers=(2, 2, 2, 2),
                      options=dict(cardinality=32, base_width=4)),
    "dlresnet18_5x5": dict(block=DualPath5x5Block, layers=(2, 2, 2, 2), options={}),
    "dlresnet18_dilated": dict(block=DualPathDilatedBlock, layers=(2, 2, 2, 2), options={}),
}

_COMMON_OPTIONS = ("zero_init_residual",)


def available_models() -> list[str]:
    """Registered model names, in registry order."""
    return list(_MODELS)


def _spec(name: str) -> dict:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {available_models()}")
    return _MODELS[name]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once); only those with requires_grad if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def pretrained_preprocessing(name: str) -> dict:
    """Input normalization and size that go with ImageNet weights, for the data layer:
    ``dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=224)`` (keys match `BatchLoader`'s).

    ``resize=224`` is torchvision's evaluation crop for these weights; resizing EuroSAT's 64×64
    tiles to it is a suggestion (a known lever for pretrained backbones, ≈12× the compute of 64×64);
    pass ``resize=None`` to the loader to keep 64×64. Defined for every registered name (a local
    ImageNet state dict passed via ``weights=`` wants the same normalization)."""
    _spec(name)
    return dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=PRETRAINED_INPUT_SIZE)


def build_model(name: str, num_classes: int = 10, *, pretrained: bool | str = False,
                weights: str | os.PathLike | None = None, stem: str = "imagenet",
                **kw) -> nn.Module:
    """Build a registered model (see `available_models()`).

    Args:
        name: registry name.
        num_classes: outputs of the ``fc`` head.
        pretrained: torchvision archs only. True: torchvision's ImageNet weights (resnet18/34:
            IMAGENET1K_V1, resnet50/resnext50_32x4d: IMAGENET1K_V2), taken from the torch hub
            cache (``$TORCH_HOME/hub/checkpoints``) or downloaded into it. A string picks another
            entry of the weights enum, e.g. ``"IMAGENET1K_V1"``. Without network and cached file:
            `WeightsUnavailable`, whose message says where to put the file.
        weights: path of a local state dict to load instead (no download is attempted; then
            `pretrained` is ignored). Accepted: a plain state dict, or a checkpoint dict holding
            it under ``"model"`` or ``"state_dict"``; ``module.``/``_orig_mod.`` prefixes (DDP,
            ``torch.compile``) are stripped. Any model, including the custom ones, can load one.
        stem: ``"imagenet"`` or ``"small"`` (see the module docstring).
        **kw: ``zero_init_residual`` (all models: last BN of each residual path starts at 0);
            ``cardinality`` (default 32) and ``base_width`` (default 4) for ``resnext18``.

    Loading weights (``pretrained`` or ``weights``): every tensor must match by name and shape,
    except that the head is replaced when its size differs from `num_classes` (it keeps the
    loaded one when it matches, e.g. 1000 classes), and — with ``stem="small"`` and 7×7 weights
    — ``conv1`` is re-initialized (kaiming, as torchvision does) with a ``UserWarning``: a 7×7
    stride-2 filter bank has no faithful 3×3 stride-1 counterpart, and the rest of the network
    still transfers. Everything else that does not fit is a ``ValueError`` naming the tensors.
    """
    spec = _spec(name)
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {list(STEMS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    allowed = list(_COMMON_OPTIONS) + list(spec.get("options", {}))
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; "
                         f"its options are {sorted(allowed)}")
    zero_init = bool(kw.pop("zero_init_residual", False))

    if "torchvision" in spec:
        import torchvision.models as tvm

        model = getattr(tvm, spec["torchvision"])(weights=None, num_classes=num_classes,
                                                  zero_init_residual=zero_init)
    else:
        model = _build_custom(name, spec, num_classes, zero_init, kw)
    if stem == "small":
        _make_small_stem(model)

    if weights is not None:
        state, source = _read_state_file(weights), f"weights file {os.fspath(weights)!r}"
    elif pretrained:
        state, source = _torchvision_state(name, spec, pretrained), f"{name} ImageNet weights"
    else:
        return model
    _load_backbone(model, state, source=source, stem=stem)
    return model


def _build_custom(name, spec, num_classes, zero_init, kw) -> nn.Module:
    from torchvision.models.resnet import ResNet

    opts = {**spec["options"], **kw}
    groups, width = 1, 64
    if spec["block"] is ResNeXtBasicBlock:
        groups, width = opts["cardinality"], opts["base_width"]
        for key, val in (("cardinality", groups), ("base_width", width)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name}: {key} must be a positive int, got {val!r}")
        if 64 % groups:
            raise ValueError(f"{name}: cardinality must divide 64 (the stem's channels) so that "
                             f"the grouped conv splits its input evenly, got {groups}")
    model = ResNet(spec["block"], list(spec["layers"]), num_classes=num_classes, groups=groups,
                   width_per_group=width)
    if zero_init:
        for m in model.modules():
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()
    return model


def _make_small_stem(model: nn.Module) -> None:
    """3×3 stride-1 conv1 (same output channels) and no max-pool."""
    out = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, out, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _torchvision_state(name: str, spec: dict, pretrained) -> Mapping[str, torch.Tensor]:
    if "torchvision" not in spec:
        tv = [n for n, s in _MODELS.items() if "torchvision" in s]
        raise ValueError(f"no ImageNet weights exist for {name!r} (pretrained=True is for {tv}); "
                         f"pass weights=PATH to a state dict of this model, or pretrained=False")
    from torchvision.models import get_model_weights, get_weight

    if isinstance(pretrained, str):
        enum = get_model_weights(spec["torchvision"])
        choices = [w.name for w in enum]
        if pretrained not in choices:
            raise ValueError(f"unknown weights {pretrained!r} for {name!r}; choose one of "
                             f"{choices} (or pretrained=True for {spec['weights']})")
        weights = enum[pretrained]
    else:
        weights = get_weight(spec["weights"])
    filename = os.path.basename(urlparse(weights.url).path)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        # reads <hub>/checkpoints/<filename> when present, downloads it there otherwise
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except OSError as err:  # URLError, HTTPError, timeouts, unreachable host, read-only cache
        raise WeightsUnavailable(
            f"ImageNet weights {weights} for {name!r} are not in the torch hub cache and could "
            f"not be downloaded ({type(err).__name__}: {err}). Either pass weights=PATH to a "
            f"state dict (e.g. a copy of {filename}), or put the file {filename} (from "
            f"{weights.url}) in {cache_dir}{os.sep} — that is $TORCH_HOME/hub/checkpoints/."
        ) from err


def _read_state_file(path) -> Mapping[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist; pass weights=PATH "
                                f"to a saved state dict (torch.save(model.state_dict(), PATH))")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {str(path)!r} holds no state dict (a mapping of names to "
                         f"tensors, or a checkpoint dict with one under 'model' / 'state_dict')")
    return obj


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> OrderedDict:
    out = OrderedDict(state)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = OrderedDict((k[len(prefix):], v) for k, v in out.items())
    meta = getattr(state, "_metadata", None)
    if meta is not None:  # keeps BN's versioned loading of old checkpoints working
        out._metadata = OrderedDict((k.replace("module.", "").replace("_orig_mod.", ""), v)
                                    for k, v in meta.items())
    return out


def _load_backbone(model: nn.Module, state, *, source: str, stem: str) -> None:
    state = _strip_prefixes(state)
    own = model.state_dict()
    drop, mismatched = set(), []
    for key, val in state.items():
        if key in own and tuple(val.shape) != tuple(own[key].shape):
            if key in ("fc.weight", "fc.bias"):
                drop.add(key)  # new head for num_classes
            elif key == "conv1.weight" and stem == "small":
                drop.add(key)
            else:
                mismatched.append(f"{key}: file {tuple(val.shape)} vs model {tuple(own[key].shape)}")
    if mismatched:
        hint = (" (a 3×3 conv1 in the file means it was saved with stem='small')"
                if any(m.startswith("conv1.weight") for m in mismatched) else "")
        raise ValueError(f"{source} does not fit this model: {mismatched[:5]}{hint}")
    conv1_shape = tuple(state["conv1.weight"].shape) if "conv1.weight" in drop else None
    for key in drop:
        del state[key]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys
               if k not in drop and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{source} does not match this model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]} (is it a state dict of the "
                         f"same architecture?)")
    if conv1_shape is not None:
        warnings.warn(f"stem='small': conv1 of the {source} has shape {conv1_shape}, which does "
                      f"not fit the small stem's 3×3 conv; conv1 was re-initialized (random), "
                      f"everything else was loaded", UserWarning, stacklevel=3)
