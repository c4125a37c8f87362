"""Forward hooks: find a layer by name and capture its output (or input) in a context manager.

`capture` is the one place in hw2lib where a forward hook is registered; feature extraction
(`hw2lib.nets.features`) and feature visualization (`hw2lib.nets.featvis`) go through it, so a hook is
removed on every exit path, exceptions included.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["Captured", "capture", "get_module"]


class _StopForward(Exception):
    """Raised by a stopping hook once the wanted tensor is captured."""


class Captured:
    """What `capture` yields: `.output` is the captured tensor of the latest forward pass (the
    layer's output, or its input with `what="input"`); None before a pass."""

    def __init__(self, model: nn.Module, name: str, *, stop: bool = False):
        self.model, self.name, self.stop = model, name, stop
        self.output = None

    def run(self, x):
        """Forward `x` through the model (stopping right after the capture when `stop=True`, which
        saves the rest of the network) and return the captured tensor."""
        self.output = None
        try:
            self.model(x)
        except _StopForward:
            pass
        if self.output is None:
            raise RuntimeError(f"layer {self.name!r} was not called in the model's forward pass")
        return self.output


def get_module(model: nn.Module, layer_name: str) -> nn.Module:
    """The submodule named `layer_name` (e.g. "layer4.2.conv3"); a ValueError naming near names
    (or, where none is near, the model's conv layers) otherwise."""
    if not isinstance(layer_name, str) or not layer_name:
        raise ValueError("layer must be a module name such as 'layer4.2.conv3', "
                         f"got {layer_name!r}")
    modules = dict(model.named_modules())
    if layer_name in modules:
        return modules[layer_name]
    names = [n for n in modules if n]
    near = difflib.get_close_matches(layer_name, names, n=5)
    if near:
        hint = f"Did you mean: {', '.join(near)}?"
    else:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        hint = f"Conv layers: {', '.join(convs[:20])}{' ...' if len(convs) > 20 else ''}."
    raise ValueError(f"model has no layer {layer_name!r}. {hint} Names come from "
                     "model.named_modules(), e.g. 'layer4.2.conv3'.")


@contextmanager
def capture(model: nn.Module, layer_name: str, *, detach: bool = False, stop: bool = False,
            what: str = "output"):
    """Capture the output of `model`'s layer `layer_name` during forward passes:

        with capture(model, "layer4") as cap:
            model(x)
        feats = cap.output

    A forward hook, removed when the block exits (also on an exception). The tensor keeps its
    graph unless `detach=True` (activation maximization and DeepDream need the gradient). With
    `stop=True`, `cap.run(x)` stops the forward pass right after the capture.
    what="input": capture the layer's (first) input instead, with a forward pre-hook — e.g. the
    penultimate features, the input of the last Linear layer.
    """
    if what not in ("output", "input"):
        raise ValueError(f"what must be 'output' or 'input', got {what!r}")
    module = get_module(model, layer_name)
    cap = Captured(model, layer_name, stop=stop)

    def keep(t):
        cap.output = t.detach() if detach and isinstance(t, torch.Tensor) else t
        if cap.stop:
            raise _StopForward

    if what == "output":
        handle = module.register_forward_hook(lambda _m, _inp, out: keep(out))
    else:
        handle = module.register_forward_pre_hook(lambda _m, inp: keep(inp[0]))
    try:
        yield cap
    finally:
        handle.remove()
