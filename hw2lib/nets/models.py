"""The networks of the study: torchvision's ResNets, a home-made ResNeXt-18 and two dual-path
ResNet-18s ("DLResNet"), all built by name from one plain dict registry.

Every model is an instance of torchvision's `ResNet` class (the custom ones only plug in this
module's `BasicBlock`), so all of them share torchvision's attribute names — `conv1, bn1, relu,
maxpool, layer1..layer4, avgpool, fc` and inside a block `conv1, bn1, conv2, bn2[, conv3, bn3],
downsample` (plus `alt_conv1, alt_bn1, alt_conv2, alt_bn2` for the dual-path blocks' second path).
A layer is therefore addressed the same way everywhere: `"layer4.2.conv3"` is ResNet-50's last 1×1
conv, `"layer4.1"` the last block of every ResNet-18 variant, `"fc"` the classifier.

    build_model("resnet50", 10, pretrained=True)              # ImageNet weights, new 10-class head
    build_model("resnet18", 10, weights="r18.pth")            # a local state dict instead
    build_model("resnext18", 10, stem="small")
    build_model("dlresnet18_5x5", 10, stem="small")

Stems: "imagenet" is torchvision's 7×7 stride-2 conv + 3×3 stride-2 max-pool (a 64×64 tile reaches
`layer4` as 2×2); "small" is a 3×3 stride-1 conv and no max-pool (`maxpool` is `nn.Identity`), so
a 64×64 tile reaches `layer4` as 8×8.

Nothing here downloads or builds anything at import time.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from hw2lib.core.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "PRETRAINED_INPUT_SIZE",
    "STEMS",
    "BasicBlock",
    "WeightsUnavailable",
    "available_models",
    "build_model",
    "count_parameters",
    "pretrained_preprocessing",
]

PRETRAINED_INPUT_SIZE = 224  # the resolution torchvision's ImageNet weights were evaluated at
STEMS = ("imagenet", "small")


class WeightsUnavailable(RuntimeError):
    """`pretrained` asks for ImageNet weights that are neither in the torch hub cache nor
    downloadable (no network). The message says where to put the file or how to pass it."""


# --------------------------------------------------------------------------------------------
# The block
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """A ResNet BasicBlock (two 3×3 convs, expansion 1), optionally grouped (ResNeXt) and
    optionally with a second residual path of another kernel (DLResNet).

    Main path, torchvision's names: ``conv1`` (3×3, stride, ``groups``) → ``bn1`` → ReLU →
    ``conv2`` (3×3, dense) → ``bn2``, where ``conv1`` maps ``inplanes → width`` and ``conv2``
    ``width → planes`` with ResNeXt's width rule ``width = int(planes * (base_width / 64)) *
    groups``. With ``groups=1, base_width=64`` (width = planes) this is torchvision's BasicBlock,
    parameter for parameter.

    Grouped (``groups`` = cardinality > 1): ``conv1`` splits its input channels into ``groups``
    parts, each transformed by its own 3×3 conv into ``width / groups`` channels, and the dense
    ``conv2`` is the sum over groups of one projection per group (the merge). The ResNeXt paper
    (§3.3) notes that with depth-2 blocks its aggregated transform is trivially a wide dense
    module, and torchvision's and timm's BasicBlocks refuse ``groups != 1``; this is the home-made
    variant that groups only the first conv. (Grouping ``conv2`` too would keep the groups apart
    through the whole stage: the next block's grouped ``conv1`` uses the same channel partition.)

    Second path (``alt_kernel`` not None): the main path's shape with another kernel,
    ``alt_conv1`` (stride, ``groups``) → ``alt_bn1`` → ReLU → ``alt_conv2`` → ``alt_bn2``, each conv
    ``alt_kernel``×``alt_kernel`` with dilation ``alt_dilation`` and "same" padding
    ``alt_dilation·(alt_kernel-1)/2``. The study's two: 5×5, and 3×3 with dilation 2; both see
    5×5 per conv and 9×9 per block (stride 1), against the 3×3 path's 3×3 and 5×5.

    Merge: ``out = relu(bn2(main) + alt_bn2(alt) + shortcut(x))`` — the two BN'd path outputs are
    *summed* before the residual addition. Why a sum rather than concat + 1×1: the sum keeps the
    block's width and the shortcut unchanged (the rest of ResNet-18, downsample and fc included,
    stays identical, so the ablation compares kernels, not extra depth or a wider head); it adds
    no parameters besides the second path's own convs and BNs (a 1×1 merge would add
    ``2·planes·planes`` per block and one more layer); each path keeps its own BN, so each learns
    its own scale and can be switched off by its BN weight (ACNet and RepVGG blocks also sum BN'd
    branches of different kernels; Selective-Kernel nets take a learned weighted sum).

    Parameters of one block, ``g = groups``, ``k = alt_kernel`` (``k = 0`` without second path):
    ``(9 + k²)·(inplanes/g·width + width·planes) + (1 + [k > 0])·(2·width + 2·planes)``
    (+ ``inplanes·planes + 2·planes`` for a projection shortcut). The second path's convs cost
    ``k²/9`` times the main path's parameters and multiply-adds: 25/9 ≈ 2.8× for 5×5 (the block
    ≈ 3.8× a BasicBlock), 1× for the dilated 3×3 (≈ 2×).

    The positional signature is torchvision's, so that its ``ResNet`` can stack the block
    (``groups`` and ``base_width`` come from ResNet's ``groups`` / ``width_per_group``); the
    second path's options are keyword-only, bound with `functools.partial` by `build_model`.
    """

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1, norm_layer=None, *, alt_kernel: int | None = None,
                 alt_dilation: int = 1):
        super().__init__()
        if dilation != 1:
            raise ValueError("BasicBlock does not support dilation > 1 (replace_stride_with_"
                             "dilation); the second path's dilation is alt_dilation")
        if alt_kernel is not None and not (isinstance(alt_kernel, int) and alt_kernel >= 1
                                           and alt_kernel % 2 == 1):
            raise ValueError(f"alt_kernel must be None or an odd positive int (same padding), "
                             f"got {alt_kernel!r}")
        if not (isinstance(alt_dilation, int) and alt_dilation >= 1):
            raise ValueError(f"alt_dilation must be a positive int, got {alt_dilation!r}")
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 3, stride, 1, groups=groups, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.has_alt = alt_kernel is not None
        if self.has_alt:  # after the main path: torchvision's ResNet initializes in module order
            k, d = alt_kernel, alt_dilation
            pad = d * (k - 1) // 2
            self.alt_conv1 = nn.Conv2d(inplanes, width, k, stride, pad, dilation=d,
                                       groups=groups, bias=False)
            self.alt_bn1 = norm_layer(width)
            self.alt_conv2 = nn.Conv2d(width, planes, k, 1, pad, dilation=d, bias=False)
            self.alt_bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.has_alt:
            out = out + self.alt_bn2(self.alt_conv2(self.relu(self.alt_bn1(self.alt_conv1(x)))))
        return self.relu(out + identity)


# --------------------------------------------------------------------------------------------
# Registry: name -> how to build it. torchvision archs go through torchvision's own builders
# (so their parameters equal torchvision's exactly); the others are torchvision's `ResNet`
# stacking `BasicBlock` with the entry's block settings.
# --------------------------------------------------------------------------------------------

_MODELS: dict[str, dict] = {
    "resnet18": dict(torchvision="resnet18", weights="ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34": dict(torchvision="resnet34", weights="ResNet34_Weights.IMAGENET1K_V1"),
    "resnet50": dict(torchvision="resnet50", weights="ResNet50_Weights.IMAGENET1K_V2"),
    "resnext50_32x4d": dict(torchvision="resnext50_32x4d",
                            weights="ResNeXt50_32X4D_Weights.IMAGENET1K_V2"),
    # ResNeXt-18 "32x4d": 32 groups, 4 channels per group at layer1 (width 128, 256, 512, 1024)
    "resnext18": dict(layers=(2, 2, 2, 2), cardinality=32, base_width=4),
    "dlresnet18_5x5": dict(layers=(2, 2, 2, 2), alt_kernel=5),
    "dlresnet18_dilated": dict(layers=(2, 2, 2, 2), alt_kernel=3, alt_dilation=2),
}

_BLOCK_SETTINGS = ("cardinality", "base_width", "alt_kernel", "alt_dilation")


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
                weights: str | os.PathLike | None = None, stem: str = "imagenet") -> nn.Module:
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

    Loading weights (``pretrained`` or ``weights``): every tensor must match by name and shape,
    except that the head is left freshly initialized when its size differs from `num_classes` (the
    loaded one is kept when it matches, e.g. 1000 classes), and — with ``stem="small"`` and 7×7
    weights — ``conv1`` keeps its fresh kaiming init (as torchvision initializes convs), with a
    ``UserWarning``: a 7×7 stride-2 filter bank has no faithful 3×3 stride-1 counterpart, and the
    rest of the network still transfers. Everything else that does not fit is a ``ValueError``
    naming the tensors.
    """
    spec = _spec(name)
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {list(STEMS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if "torchvision" in spec:
        import torchvision.models as tvm

        model = getattr(tvm, spec["torchvision"])(weights=None, num_classes=num_classes)
    else:
        settings = {k: spec[k] for k in _BLOCK_SETTINGS if k in spec}
        model = _build_resnet(spec["layers"], num_classes, **settings)
    if stem == "small":
        _make_small_stem(model)

    if weights is not None:
        state, source = _read_state_file(weights), f"weights file {os.fspath(weights)!r}"
    elif pretrained:
        state, source = _torchvision_state(name, spec, pretrained), f"{name} ImageNet weights"
    else:
        return model
    _load_state_into(model, state, source=source, stem=stem)
    return model


def _build_resnet(layers, num_classes, *, cardinality=1, base_width=64, alt_kernel=None,
                  alt_dilation=1) -> nn.Module:
    """torchvision's `ResNet` stacking `BasicBlock(groups=cardinality, base_width, alt_*)`
    (cardinality divides the stem's 64 channels, so the grouped conv splits its input evenly)."""
    from torchvision.models.resnet import ResNet

    block = partial(BasicBlock, alt_kernel=alt_kernel, alt_dilation=alt_dilation)
    block.expansion = BasicBlock.expansion  # ResNet reads it from the block it is given
    return ResNet(block, list(layers), num_classes=num_classes, groups=cardinality,
                  width_per_group=base_width)


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


def cached_weights(name: str) -> dict:
    """Where `build_model(name, pretrained=True)` takes its ImageNet weights from (the torch hub
    cache), and whether the file is there — found without downloading anything."""
    spec = _spec(name)
    if "torchvision" not in spec:
        return {"model": name, "file": None, "present": False, "path": None}
    from torchvision.models import get_weight

    weights = get_weight(spec["weights"])
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    return {"model": name, "file": path.name, "present": path.is_file(), "path": str(path),
            "url": weights.url}


def _read_state_file(path) -> Mapping[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist; pass weights=PATH "
                                f"to a saved state dict (torch.save(model.state_dict(), PATH))")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text is a page about weights_only
        raise ValueError(f"weights file {str(path)!r} holds Python objects besides tensors and "
                         "was not loaded (only plain state dicts are, with weights_only=True, so "
                         "that a file cannot run code); save just the tensors with "
                         f"torch.save(model.state_dict(), PATH) ({str(exc).splitlines()[0][:80]})"
                         ) from None
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {str(path)!r} holds no state dict (a mapping of names to "
                         f"tensors, or a checkpoint dict with one under 'model' / 'state_dict')")
    return obj


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> OrderedDict:
    """Drop a ``module.`` / ``_orig_mod.`` prefix (DDP, torch.compile, in either nesting) that
    every key carries."""
    out = OrderedDict(state)
    meta = getattr(state, "_metadata", None)
    meta = None if meta is None else OrderedDict(meta)
    stripped = True
    while stripped and out:
        stripped = False
        for prefix in ("module.", "_orig_mod."):
            if out and all(k.startswith(prefix) for k in out):
                out = OrderedDict((k[len(prefix):], v) for k, v in out.items())
                if meta is not None:
                    meta = OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v)
                                       for k, v in meta.items())
                stripped = True
    if meta is not None:  # keeps BN's versioned loading of old checkpoints working
        out._metadata = meta
    return out


def _load_state_into(model: nn.Module, state, *, source: str, stem: str) -> None:
    """Load `state` into `model` in place, with build_model's rules (see its docstring): a head of
    another size and (stem="small") a 7×7 conv1 are skipped; any other mismatch, missing or
    unexpected tensor is a ValueError naming `source`."""
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
