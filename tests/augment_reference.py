"""The plain composition of hw2lib.data.augment's draws and maps, batch by batch, as the
oracle `BatchLoader`'s fused path (the epoch's draws copied once, the normalization folded into
the colour map) must equal: draw a batch's parameters from the generator, apply them, clip."""

from __future__ import annotations

import torch

from hw2lib.data.augment import (
    JITTER,
    PADDING,
    apply_affine,
    apply_crop_flip,
    check_preset,
    color_affine_from,
    draw_color,
    draw_crop_flip,
)


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int, vflip: bool,
              transpose: bool = False) -> torch.Tensor:
    """Random crop of each sample from its zero-padded image plus a random horizontal (and
    optionally vertical) flip, and optionally a random transposition, as one gather; any dtype,
    any device. With `vflip` and `transpose` each of the 8 symmetries of the square (the dihedral
    group D4: rotations by 0/90/180/270° with or without a mirror) is equally likely."""
    b, c, h, w = x.shape
    if transpose and h != w:
        raise ValueError(f"transposition needs square images, got {h}×{w}")
    params = draw_crop_flip(b, generator, padding, vflip, transpose)
    return apply_crop_flip(x, {k: v.to(x.device) for k, v in params.items()}, padding)


def color_affine(x, generator, strength: float):
    """Per-sample colour jitter as one affine map of each pixel's colour: brightness (×fb), contrast
    (blend with the image's mean gray), saturation (blend with the pixel's gray), the factors
    uniform in [1 − strength, 1 + strength]. Returns (M B×3×3, t B×3) for `x`'s pixel scale
    (clip after applying). Only x's mean gray is read."""
    return color_affine_from(x, draw_color(x.shape[0], generator, strength).to(x.device))


def augment_batch(x, preset, generator, *, padding=PADDING, jitter=JITTER) -> torch.Tensor:
    """Augment a whole batch with per-sample random parameters from `generator` (a torch.Generator
    on any device; parameters are moved to x's device): `x` float B×3×H×W in [0, 1], any device.

    - "none": `x` itself (the identity).
    - "basic": random crop from the image zero-padded by `padding` + horizontal flip.
    - "color": basic + colour jitter (brightness, contrast, saturation factors each uniform in
      [1 − jitter, 1 + jitter], applied in that order, clipped to [0, 1] once at the end).
    - "d4": random crop + one of the 8 symmetries of the square (flips and 90° rotations), each
      equally likely: aerial tiles have no "up".
    """
    check_preset(preset)
    if preset == "none":
        return x
    x = crop_flip(x, generator, padding, preset == "d4", transpose=preset == "d4")
    if preset == "color":
        mat, shift = color_affine(x, generator, jitter)
        x = apply_affine(x, mat.to(x.dtype), shift.to(x.dtype)).clamp_(0, 1)
    return x
