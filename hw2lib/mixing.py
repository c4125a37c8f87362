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

from hw2lib.constants import MIXES


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


def mix_batch(xb: torch.Tensor, yb: torch.Tensor, kind: str, alpha: float,
              generator: torch.Generator):
    """(mixed x, y, partner's y, λ) for one batch. `kind`: "mixup", "cutmix", or "both" (either,
    with probability ½ each). `x` is not changed in place."""
    check_mix(kind, alpha)
    perm = torch.randperm(xb.shape[0], generator=generator).to(xb.device)
    if kind == "both":
        kind = "mixup" if torch.rand(1, generator=generator).item() < 0.5 else "cutmix"
    lam, cy, cx = _draw(generator, alpha)
    partner = xb.index_select(0, perm)
    if kind == "mixup":
        return torch.lerp(partner, xb, lam), yb, yb.index_select(0, perm), lam
    h, w = xb.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(h, w, lam, cy, cx)
    out = xb.clone()
    out[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, yb, yb.index_select(0, perm), lam


class Mixer:
    """`mix_batch` with fixed kind, α and generator: a callable (x, y) → (x, y, y_partner, λ)."""

    def __init__(self, kind: str, alpha: float, generator: torch.Generator):
        check_mix(kind, alpha)
        self.kind, self.alpha, self.generator = kind, float(alpha), generator

    def __call__(self, xb, yb):
        return mix_batch(xb, yb, self.kind, self.alpha, self.generator)
