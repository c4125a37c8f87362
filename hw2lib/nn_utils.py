"""Small facts about a torch module that several steps need: where it lives, its last Linear
layer, and a temporary switch to eval mode."""

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
