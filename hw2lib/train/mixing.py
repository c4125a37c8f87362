"""Batch mixing for training: mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019).

A mixed batch pairs each sample with a partner from the same batch (a seeded permutation) and
blends them by a factor λ ~ Beta(α, α): mixup blends whole images, CutMix pastes a box of the
partner covering a fraction 1 − λ of the image (λ then set to the exact uncovered fraction). The
loss is λ·loss(out, y) + (1 − λ)·loss(out, y_partner), so any criterion works, Balanced Softmax
and label smoothing included. Every draw comes from the given torch.Generator (the train loader's),
so a seed gives the same mixed batches and a resumed run continues the same stream.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hw2lib.core.constants import MIXES
from hw2lib.core.runtime import to_device_once


def check_mix(kind: str, alpha: float) -> None:
    if kind not in MIXES:
        raise ValueError(f"unknown mix {kind!r}; choose one of {MIXES}")
    if kind != "none" and not float(alpha) > 0:
        raise ValueError(f"mix_alpha must be > 0 for mix={kind!r}, got {alpha!r}")


def _draw(generator: torch.Generator, alpha: float) -> tuple[float, float, float]:
    """λ ~ Beta(α, α) and two uniform numbers (CutMix's box centre), all from `generator`
    (torch's Beta takes no generator, so a seed drawn from it drives NumPy's)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    cy, cx = rng.random(2)
    return lam, float(cy), float(cx)


def cutmix_box(h: int, w: int, lam: float, cy: float, cx: float) -> tuple[int, int, int, int]:
    """The box (y0, y1, x0, x1) of area ≈ (1 − λ)·h·w centred at (cy·h, cx·w), clipped."""
    r = math.sqrt(1.0 - lam)
    bh, bw = int(round(h * r)), int(round(w * r))
    y, x = int(cy * h), int(cx * w)
    return (max(y - bh // 2, 0), min(y + bh - bh // 2, h), max(x - bw // 2, 0),
            min(x + bw - bw // 2, w))


def _format(x: torch.Tensor):
    """x's memory format (channels_last or contiguous), to keep it through the mixing."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _mix(xb, yb, perm, kind: str, lam: float, cy: float, cx: float):
    """Mix a batch with its partners `xb[perm]` (perm on xb's device): no host sync."""
    partner = xb.index_select(0, perm).contiguous(memory_format=_format(xb))
    if kind == "mixup":
        return torch.lerp(partner, xb, lam), yb, yb.index_select(0, perm), lam
    h, w = xb.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(h, w, lam, cy, cx)
    out = xb.clone()  # keeps xb's memory format
    out[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, yb, yb.index_select(0, perm), lam


def mix_batch(xb: torch.Tensor, yb: torch.Tensor, kind: str, alpha: float,
              generator: torch.Generator):
    """(mixed x, y, partner's y, λ) for one batch. `kind`: "mixup", "cutmix", or "both" (either,
    with probability ½ each). `x` is not changed in place; its memory format is kept."""
    check_mix(kind, alpha)
    perm = torch.randperm(xb.shape[0], generator=generator).to(xb.device)
    if kind == "both":
        kind = "mixup" if torch.rand(1, generator=generator).item() < 0.5 else "cutmix"
    lam, cy, cx = _draw(generator, alpha)
    return _mix(xb, yb, perm, kind, lam, cy, cx)


class Mixer:
    """Mixing for one epoch of training: a callable (x, y) → (x, y, y_partner, λ) with fixed kind,
    α and generator.

    At its first call it draws the parameters of `batches` batches at once (default 64; another
    such draw when they run out): each batch's partner order (random keys sorted on the host: a
    uniform permutation of any batch up to the first batch's size), its kind ("both": mixup or
    CutMix, ½ each), λ and CutMix's box centre. The full batches' orders reach the device in one
    copy (pinned, non-blocking on CUDA; a shorter last batch's order in one more), the rest stays
    on the host, so no step waits for the device, and the draws are the same on every device. A
    new epoch takes a new Mixer, so what an epoch draws depends only on the generator's state at
    its start (what a checkpoint stores)."""

    def __init__(self, kind: str, alpha: float, generator: torch.Generator,
                 batches: int | None = None):
        check_mix(kind, alpha)
        self.kind, self.alpha, self.generator = kind, float(alpha), generator
        self.batches = int(batches) if batches else 64
        self._keys, self._perms, self._kinds, self._draws, self._next = None, None, [], [], 0

    def _draw_block(self, size: int, device) -> None:
        n, g = self.batches, self.generator
        self._keys = torch.rand(n, size, generator=g)  # on the host
        if self.kind == "both":
            u = torch.rand(n, generator=g).tolist()
            self._kinds = ["mixup" if v < 0.5 else "cutmix" for v in u]
        else:
            self._kinds = [self.kind] * n
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
        lam = rng.beta(self.alpha, self.alpha, n)
        centre = rng.random((n, 2))
        self._draws = [(float(lam[i]), float(centre[i, 0]), float(centre[i, 1]))
                       for i in range(n)]
        self._perms = to_device_once(self._keys.argsort(dim=1, stable=True), device)
        self._next = 0

    def __call__(self, xb, yb):
        b = xb.shape[0]
        if self._keys is None or self._next == self.batches:
            self._draw_block(b, xb.device)
        size = self._keys.shape[1]
        if b > size:
            raise ValueError(f"the Mixer drew partner orders for batches of up to {size} (its "
                             f"first batch) and got one of {b}: a loader's first batch must be "
                             "its largest")
        i = self._next
        self._next += 1
        perm = (self._perms[i] if b == size
                else to_device_once(self._keys[i, :b].argsort(stable=True), xb.device))
        return _mix(xb, yb, perm, self._kinds[i], *self._draws[i])
