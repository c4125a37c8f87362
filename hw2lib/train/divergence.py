"""The divergence policy of `fit`: an epoch whose losses, weights, BatchNorm statistics or
optimizer state are not all finite raises `TrainingDiverged` and is never saved."""

from __future__ import annotations

import math

import torch
from torch import nn


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf (a loss, the weights, BatchNorm statistics or optimizer state);
    the message names the epoch (and step), what was non-finite and the last good checkpoint."""


def nonfinite_tensors(model: nn.Module, optimizer, device: torch.device) -> list[str]:
    """Names of the model's parameters/buffers (BatchNorm running stats included) and optimizer
    state tensors holding NaN or inf: one host sync for all of them."""
    named = [(f"model.{k}", v) for k, v in model.state_dict().items() if v.is_floating_point()]
    for i, state in optimizer.state_dict()["state"].items():
        named += [(f"optimizer.state[{i}].{k}", v) for k, v in state.items()
                  if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(v).all().to(device) for _, v in named]).tolist()
    return [name for (name, _), good in zip(named, ok, strict=True) if not good]


def check_epoch(epoch: int, losses: dict, model: nn.Module, optimizer,
                device: torch.device) -> None:
    """Raise `TrainingDiverged` naming the epoch and what is non-finite: a mean loss of `losses`
    (name -> value), or a tensor of the model or the optimizer state (the first three named)."""
    bad = [f"{k} {v}" for k, v in losses.items() if not math.isfinite(v)]
    tensors = nonfinite_tensors(model, optimizer, device)
    if tensors:
        more = f" (and {len(tensors) - 3} more)" if len(tensors) > 3 else ""
        bad.append(f"NaN/inf in {', '.join(tensors[:3])}{more}")
    if bad:
        raise TrainingDiverged(f"training diverged at epoch {epoch}: {'; '.join(bad)}; lower "
                               "the learning rate, add warmup or check the inputs.")
