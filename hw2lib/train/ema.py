"""Exponential moving average (EMA) of a model's weights, as evaluated in place of the model.

After every optimizer step, each floating-point entry of the EMA copy's state (weights and
BatchNorm statistics) moves towards the model's: e ← e + (1 − d)·(m − e), integer entries (the
BatchNorm step counters) are copied — each as one multi-tensor (`_foreach`) operation: a few
kernel launches per step on CUDA, not one per tensor. The decay ramps up as
d = min(decay, (1 + t)/(10 + t)) at step t, so that a short run's average is not dominated by the
random initialization.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        self.decay, self.steps = float(decay), 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pairs(model)

    def _pairs(self, model: nn.Module) -> None:
        mine, theirs = self.model.state_dict(), model.state_dict()
        if mine.keys() != theirs.keys():
            raise ValueError("the EMA copy and the model have different state keys")
        self._float = ([mine[k] for k in mine if mine[k].is_floating_point()],
                       [theirs[k] for k in mine if mine[k].is_floating_point()])
        self._other = ([mine[k] for k in mine if not mine[k].is_floating_point()],
                       [theirs[k] for k in mine if not mine[k].is_floating_point()])

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.steps) / (10 + self.steps))

    @torch.no_grad()
    def update(self) -> None:
        """One step towards the model given at construction (call after `optimizer.step()`)."""
        self.steps += 1
        d = self.current_decay()
        torch._foreach_lerp_(self._float[0], self._float[1], 1.0 - d)
        if self._other[0]:  # the BatchNorm counters: one multi-tensor copy, not one per layer
            torch._foreach_copy_(self._other[0], self._other[1])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "steps": self.steps, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = int(state["steps"])
