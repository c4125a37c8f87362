"""Device set-up for training and evaluation: what is chosen per device (fused optimizers,
cudnn.benchmark, the evaluation batch size), per model (channels_last on CUDA), and the one way a
host tensor drawn once per epoch goes to the device (pinned, without waiting).

Everything here is a no-op or the plain float32 path on the CPU, so CPU results do not depend on
it; the CUDA choices are made by reading (no GPU was at hand) and are to be confirmed by
`hw2 bench train` on one.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

# channels_last on CUDA, per model (the registry's names). Off where grouped 3×3 convolutions
# have 2–4 channels a group (the ResNeXts), which cuDNN can run slower in channels_last; on for
# the rest. A model not named here is decided by `narrow_groups`. `hw2 bench train` measures
# each model in both formats on the GPU at hand: change an entry when it says otherwise.
CHANNELS_LAST_ON_CUDA = {"resnet18": True, "resnet34": True, "resnet50": True,
                         "dlresnet18_5x5": True, "dlresnet18_dilated": True,
                         "resnext18": False, "resnext50_32x4d": False}
NARROW_GROUP = 4  # channels per group at or below which a grouped conv counts as narrow
EVAL_BATCH_FACTOR = 4  # CUDA: evaluation batch = this × the training batch (see eval_batch_size)


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def optimizer_options(device) -> dict:
    """Extra keyword arguments for a torch optimizer on `device`: `fused=True` on CUDA (one
    kernel for the whole update instead of one per tensor group); none on the CPU, where the
    default (for-each) update keeps the results this code base has always had."""
    return {"fused": True} if _device(device).type == "cuda" else {}


@contextmanager
def cudnn_benchmark(device):
    """`torch.backends.cudnn.benchmark = True` for the body when `device` is CUDA (a training's
    shapes are fixed, so the autotuned kernels are reused); the previous value restored after.
    Nothing changes on other devices."""
    if _device(device).type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def narrow_groups(model: nn.Module, limit: int = NARROW_GROUP) -> bool:
    """Whether `model` has a grouped convolution with at most `limit` input channels a group."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.in_channels // m.groups <= limit
               for m in model.modules())


def channels_last_for(model: nn.Module, device, name: str | None = None) -> bool:
    """Whether to train and evaluate `model` in channels_last on `device`: never off CUDA; on
    CUDA the `CHANNELS_LAST_ON_CUDA` entry of its registry `name`, else on unless it has narrow
    grouped convolutions."""
    if _device(device).type != "cuda":
        return False
    if name in CHANNELS_LAST_ON_CUDA:
        return CHANNELS_LAST_ON_CUDA[name]
    return not narrow_groups(model)


def eval_batch_size(train_batch_size: int, device) -> int:
    """Evaluation batch size: on CUDA `EVAL_BATCH_FACTOR` × the training batch (inference keeps
    no activations for a backward pass, so this fits in about the training's memory, and a val
    pass takes a quarter of the launches); elsewhere the training batch itself (no per-batch cost
    worth amortizing on the CPU, and the CPU's numbers stay as they were)."""
    bs = int(train_batch_size)
    return bs * EVAL_BATCH_FACTOR if _device(device).type == "cuda" else bs


def to_device_once(t: torch.Tensor, device) -> torch.Tensor:
    """`t` (a host tensor, e.g. an epoch's random draws) on `device`: on CUDA through pinned
    memory without blocking the host (the copy is queued behind the device's work instead of
    waiting for it); elsewhere `t.to(device)`."""
    device = _device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
