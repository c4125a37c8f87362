"""Small facts about a torch module that several steps need: where it lives, its last Linear
layer (and keeping it in float32 under autocast), and a temporary switch to eval mode."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for an empty model."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_same_device(model: nn.Module, device) -> torch.device:
    """The model's device; `device`, when given, must be the same (the model is not moved)."""
    have = model_device(model)
    if device is None:
        return have
    device = torch.device(device)
    if next(iter(model.parameters()), None) is None:
        return device
    if device.type != have.type or (device.index is not None and device.index != have.index):
        raise ValueError(f"device={device} but the model's parameters are on {have}; move the "
                         f"model first (model.to(device)) or pass device=None")
    return have


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """(name, module) of the last `nn.Linear` in module order (torchvision ResNets: "fc")."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError("the model has no nn.Linear layer (no classifier head to find); "
                         "pass layer='<module name>'")
    return found[-1]


class Fp32Linear(nn.Linear):
    """An `nn.Linear` that computes in float32 even under autocast (its input cast up): the
    classifier head's logits are then not rounded to bf16, so argmax ties, post-hoc logit
    adjustment and test-time averaging work on full-precision logits. Same parameters and state
    dict as `nn.Linear`; outside autocast it is `nn.Linear` itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))


def keep_head_fp32(model: nn.Module) -> nn.Module:
    """Make the model's classifier head (its last `nn.Linear`, see `last_linear`) an `Fp32Linear`
    in place, if it has one; the same model is returned. Its weights and state-dict keys do not
    change; calling it again changes nothing."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if found and type(found[-1]) is nn.Linear:
        found[-1].__class__ = Fp32Linear
    return model


@contextmanager
def eval_mode(model: nn.Module):
    """model.eval() for the body; every submodule's training flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in modes:
            m.training = t
