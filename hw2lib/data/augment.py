"""Whole-batch augmentation with torch ops on any device: random crop from the zero-padded image,
flips (or any of the 8 symmetries of the square), and colour jitter as one per-sample affine map of
each pixel's colour."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hw2lib.core.constants import AUGMENT_PRESETS

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def luma_weights(device) -> torch.Tensor:
    """The luma weights (R, G, B) on `device`, for `color_affine_from` to reuse."""
    return torch.tensor(_GRAY, device=device)


def check_preset(preset: str) -> None:
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {AUGMENT_PRESETS}")


PADDING = 4  # random crops are taken from the image zero-padded by this many pixels
JITTER = 0.4  # colour jitter: brightness, contrast, saturation factors uniform in 1 ± JITTER


def draw_crop_flip(b: int, generator: torch.Generator, padding: int, vflip: bool,
                   transpose: bool = False) -> dict[str, torch.Tensor]:
    """The random parameters of `crop_flip` for `b` samples, on the generator's device, in the
    order `crop_flip` draws them: crop offsets ("offs", 2×b), flips ("flips", 1 or 2 × b, bool),
    and with `transpose` the transpositions ("swap", b, bool)."""
    gdev = generator.device
    params = {"offs": torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=gdev),
              "flips": torch.rand(2 if vflip else 1, b, generator=generator, device=gdev) < 0.5}
    if transpose:  # drawn after the crop and flips: the other presets' streams are unchanged
        params["swap"] = torch.rand(b, generator=generator, device=gdev) < 0.5
    return params


def apply_crop_flip(x: torch.Tensor, params: dict, padding: int, aranges=None) -> torch.Tensor:
    """`crop_flip` with its parameters given (`draw_crop_flip`'s, on x's device): one gather, no
    host sync. `aranges`: (arange(h), arange(w)) on x's device, to reuse."""
    b, c, h, w = x.shape
    offs, flips, swap = params["offs"], params["flips"], params.get("swap")
    if swap is not None and h != w:
        raise ValueError(f"transposition needs square images, got {h}×{w}")
    ar_h, ar_w = aranges if aranges is not None else (torch.arange(h, device=x.device),
                                                        torch.arange(w, device=x.device))
    cols = offs[1, :, None] + torch.where(flips[0, :, None], w - 1 - ar_w, ar_w)
    rows = offs[0, :, None] + (torch.where(flips[1, :, None], h - 1 - ar_h, ar_h)
                               if flips.shape[0] == 2 else ar_h)
    xp = F.pad(x, (padding, padding, padding, padding)) if padding else x
    wp = w + 2 * padding
    index = rows[:, :, None] * wp + cols[:, None, :]  # out[i, j] = padded[rows[i], cols[j]]
    if swap is not None:
        index = torch.where(swap[:, None, None], index.transpose(1, 2), index)
    index = index.reshape(b, 1, h * w).expand(b, c, h * w)
    return xp.flatten(2).gather(2, index).view(b, c, h, w)


def draw_color(b: int, generator: torch.Generator, strength: float) -> torch.Tensor:
    """The colour jitter's factors for `b` samples (3×b: brightness, contrast, saturation, each
    uniform in [1 − strength, 1 + strength]), on the generator's device."""
    f = torch.rand(3, b, generator=generator, device=generator.device)
    return 1 - strength + 2 * strength * f


def color_affine_from(x, factors, gray=None):
    """`color_affine` with its factors given (`draw_color`'s, on x's device); `gray`: the luma
    weights on x's device, to reuse. No host sync."""
    fb, fc, fs = factors
    gray = torch.tensor(_GRAY, device=x.device) if gray is None else gray
    return color_matrix(fb, fc, fs, x.float().mean((2, 3)) @ gray, gray=gray)


def color_matrix(fb, fc, fs, mean_gray, gray=None):
    """torchvision's adjust_brightness → adjust_contrast → adjust_saturation with per-sample
    factors, composed without the clipping in between: y = M x + t. `gray`: the luma weights on
    fb's device (made here when not given)."""
    b = fb.shape[0]
    gray = torch.tensor(_GRAY, device=fb.device) if gray is None else gray
    eye = torch.eye(3, device=fb.device)
    sat = fs.view(b, 1, 1) * eye + (1 - fs).view(b, 1, 1) * gray.view(1, 1, 3)
    # saturation maps a gray constant to itself (the luma weights sum to 1), hence t below
    return sat * (fc * fb).view(b, 1, 1), ((1 - fc) * fb * mean_gray).view(b, 1).expand(b, 3)


def apply_affine(x, mat, shift):
    """y = mat · x + shift for each pixel's colour: x B×C×H×W, mat B×C×C, shift B×C."""
    b, c, h, w = x.shape
    return torch.baddbmm(shift.unsqueeze(2), mat, x.reshape(b, c, h * w)).view(b, c, h, w)
