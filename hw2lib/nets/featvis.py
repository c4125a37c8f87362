"""Feature visualization: DeepDream and activation maximization of a layer's channels, and the
helpers around them (resize a tile, measure which channels a tile excites, choose channels).

Layers are addressed by module name as in lucent's objectives ("layer4.2.conv3", channel 12).
Hooks go through `hw2lib.nets.hooks.capture`, a context manager, so the hook is removed on every exit
path. The model's parameters are never changed and get no `.grad`: gradients are taken with
`torch.autograd.grad` with respect to the image only, the model is put in eval mode for the call
and its modes are restored afterwards. The model is not moved: `device=None` means the model's
device, and a given `device` must be the model's.
Images are 3×H×W float tensors in [0, 1] pixel space; `mean`/`std` normalization is applied
inside, just before the model (default: ImageNet's; pass the model's own).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from hw2lib.core.constants import IMAGENET_MEAN, IMAGENET_STD
from hw2lib.nets.hooks import capture
from hw2lib.nets.nn_utils import check_same_device, eval_mode

__all__ = [
    "activation_maximization",
    "channel_activations",
    "choose_channels",
    "deepdream",
    "resize_image",
]

# lucent / lucid: square root of the ImageNet colour correlation (for the decorrelated FFT image).
_COLOR_CORRELATION_SVD_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)


# ----------------------------------------------------------------------------------------------
# images


def _as_image(img, name: str = "image"):
    """3×H×W float32 tensor in [0,1] (CPU) from a tensor (3×H×W, 1×3×H×W, uint8 or float) or an
    H×W×3 / 3×H×W numpy array."""
    if isinstance(img, np.ndarray):
        a = img
        if a.ndim == 3 and a.shape[-1] == 3 and a.shape[0] != 3:
            a = np.moveaxis(a, -1, 0)
        t = torch.from_numpy(np.ascontiguousarray(a))
    elif isinstance(img, torch.Tensor):
        t = img.detach().cpu()
    else:
        raise ValueError(f"{name} must be a 3×H×W tensor or an image array, got {type(img).__name__}")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"{name} must be 3×H×W (RGB, channels first), got shape {tuple(t.shape)}")
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return t.clamp(0.0, 1.0).contiguous()


def resize_image(image, size, mode: str = "bicubic"):
    """Resize a 3×H×W image in [0,1] to `size` (int or (H, W)); result clipped to [0,1]."""
    x = _as_image(image)
    hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if tuple(x.shape[1:]) == hw:
        return x.clone()
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kw["antialias"] = True
    return F.interpolate(x[None], size=hw, mode=mode, **kw)[0].clamp(0.0, 1.0)


def _normalizer(mean, std, device):
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    if m.numel() != 3 or s.numel() != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
    return lambda x: (x - m) / s


def _check_channels(act, channels, layer):
    c = act.shape[1]
    bad = [ch for ch in channels if not 0 <= ch < c]
    if bad:
        raise ValueError(f"channel(s) {bad} out of range: layer {layer!r} has {c} channels "
                         f"(0..{c - 1})")


def _roll(x, gen, jitter: int):
    if jitter <= 0:
        return x, (0, 0)
    dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1)), (dy, dx)


def _gaussian_blur(x, sigma: float):
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad_mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, r, r), mode=pad_mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _octave_sizes(h: int, w: int, octaves: int, scale: float, min_size: int):
    sizes = []
    for i in range(max(1, int(octaves)) - 1, -1, -1):
        f = scale ** i
        hh, ww = round(h / f), round(w / f)
        if min(hh, ww) < min(min_size, h, w):
            continue
        if not sizes or sizes[-1] != (hh, ww):
            sizes.append((hh, ww))
    if not sizes or sizes[-1] != (h, w):
        sizes.append((h, w))
    return sizes


# ----------------------------------------------------------------------------------------------
# which channels a tile excites


def channel_activations(model, image, layer: str, *, size, mean, std,
                        device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean activation of every channel of `layer` for one image, and the model's class
    probabilities for it.

    image: 3×H×W in [0,1] (float or uint8), resized to `size` (int or (H, W)) with `resize_image`
    (as the optimizations see it), normalized by `mean`/`std`, one forward pass in eval mode
    without gradients (the hook is removed and the model's modes restored afterwards).
    Returns (C float32 on the CPU: the layer's output averaged over its spatial positions,
    K float32 on the CPU: the softmax of the model's logits).
    """
    dev = check_same_device(model, device)
    x = _normalizer(mean, std, dev)(resize_image(image, size).to(dev)[None])
    with eval_mode(model), torch.no_grad(), capture(model, layer, detach=True) as cap:
        logits = model(x)
    act = cap.output
    if act is None:
        raise RuntimeError(f"layer {layer!r} was not called in the model's forward pass")
    if not isinstance(act, torch.Tensor) or act.dim() < 2:
        raise ValueError(f"layer {layer!r} must output an N×C(×H×W) tensor to have channels, got "
                         f"{tuple(act.shape) if isinstance(act, torch.Tensor) else type(act)}")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("the model must return N×K class logits to give class probabilities")
    per_channel = act[0].flatten(1).mean(1) if act.dim() > 2 else act[0]
    return per_channel.float().cpu(), logits.float().softmax(1)[0].cpu()


def _channel_index(ch, c: int, what: str) -> int:
    if isinstance(ch, bool) or not isinstance(ch, int | np.integer):
        raise ValueError(f"{what} must be a channel index (an int in 0..{c - 1}), got {ch!r}")
    if not 0 <= ch < c:
        raise ValueError(f"{what}={ch} out of range: the layer has {c} channels (0..{c - 1})")
    return int(ch)


def choose_channels(activations, channel="top", k=6) -> tuple[int, list[int]]:
    """The channel to visualize and the channels of a grid, from a tile's mean activation per
    channel (`channel_activations(...)[0]`).

    channel: "top" -> the channel with the largest mean activation; an int -> that channel.
    k: an int -> the k channels with the largest mean activation, largest first; a list of
    channel indices -> those, in that order. Indices are checked against the number of channels.
    Returns (channel, grid channels).
    """
    act = torch.as_tensor(np.asarray(activations) if not isinstance(activations, torch.Tensor)
                          else activations).detach().float().cpu()
    if act.dim() != 1 or not act.numel():
        raise ValueError(f"activations must be a non-empty 1-D tensor (one mean per channel), got "
                         f"shape {tuple(act.shape)}")
    c = act.numel()
    if isinstance(channel, str):
        if channel != "top":
            raise ValueError(f"channel must be 'top' or a channel index in 0..{c - 1}, "
                             f"got {channel!r}")
        chosen = int(act.argmax())
    else:
        chosen = _channel_index(channel, c, "channel")
    if isinstance(k, int | np.integer) and not isinstance(k, bool):
        if not 1 <= k <= c:
            raise ValueError(f"k={k} top channels asked for, but the layer has {c} channels; "
                             f"pass 1..{c} or a list of channel indices")
        grid = act.topk(int(k)).indices.tolist()
    elif isinstance(k, list | tuple):
        if not k:
            raise ValueError("k is an empty list; pass a number of top channels or channel indices")
        grid = [_channel_index(ch, c, "k") for ch in k]
    else:
        raise ValueError(f"k must be a number of top channels or a list of channel indices, "
                         f"got {k!r}")
    return chosen, grid


# ----------------------------------------------------------------------------------------------
# DeepDream


def deepdream(model, image, layer: str, *, channels=None, octaves: int = 4,
              octave_scale: float = 1.4, steps: int = 20, lr: float = 0.02, jitter: int = 8,
              mean=IMAGENET_MEAN, std=IMAGENET_STD, device=None, generator=None,
              size=None, min_size: int = 32):
    """DeepDream: gradient ascent on the image to amplify what `layer` responds to.

    Objective: channels=None -> mean of the squared activation over all channels (the classic
    DeepDream L2 objective: amplify whatever the layer already sees, whatever its sign);
    channels=int or list -> mean activation of those channels.

    Octaves: the image is processed from its smallest version (÷ octave_scale**(octaves-1),
    octaves smaller than `min_size` px skipped) up to full size; at each octave the detail added so
    far is upsampled and added to the resized original (classic DeepDream). Each of `steps` steps
    per octave: random roll by up to ±`jitter` px (undone on the gradient), gradient w.r.t. the
    [0,1] image (normalized by `mean`/`std` inside), step of `lr` × gradient / mean(|gradient|),
    clip to [0,1].

    image: 3×H×W in [0,1] (float or uint8); `size` (int or (H, W)) resizes it first (e.g. 224 for
    a 64×64 tile). generator: torch.Generator for the rolls (default: seeded 0; reproducible on
    the CPU, close but not bit-identical on CUDA, whose backward kernels are not deterministic).
    Returns the dreamed image, 3×H×W float32 in [0,1] on the CPU.
    """
    if octaves < 1 or steps < 0 or octave_scale <= 1.0:
        raise ValueError(f"deepdream needs octaves >= 1, steps >= 0 and octave_scale > 1, got "
                         f"octaves={octaves}, steps={steps}, octave_scale={octave_scale}")
    if channels is not None:
        channels = [int(channels)] if np.isscalar(channels) else [int(c) for c in channels]
        if not channels:
            raise ValueError("channels is empty; pass None for all channels or a list of indices")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    dev = check_same_device(model, device)
    base = _as_image(image) if size is None else resize_image(image, size)
    h, w = base.shape[1:]
    base = base.to(dev)[None]
    norm = _normalizer(mean, std, dev)

    def objective(act):
        if channels is None:
            return act.pow(2).mean()
        return act[:, channels].mean()

    detail = None
    with eval_mode(model), capture(model, layer, stop=True) as cap:
        checked = False
        for hw in _octave_sizes(h, w, octaves, octave_scale, min_size):
            base_o = F.interpolate(base, size=hw, mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0, 1)
            if detail is None:
                detail = torch.zeros_like(base_o)
            else:
                detail = F.interpolate(detail, size=hw, mode="bilinear", align_corners=False)
            x = (base_o + detail).clamp(0, 1)
            j = min(int(jitter), min(hw) // 2)
            for _ in range(steps):
                xr, (dy, dx) = _roll(x, gen, j)
                xr = xr.detach().requires_grad_(True)
                with torch.enable_grad():
                    act = cap.run(norm(xr))
                    if not checked and channels is not None:
                        _check_channels(act, channels, layer)
                    checked = True
                    (g,) = torch.autograd.grad(objective(act), xr)
                g = torch.roll(g, shifts=(-dy, -dx), dims=(-2, -1))
                with torch.no_grad():
                    x = (x + lr * g / (g.abs().mean() + 1e-8)).clamp(0, 1)
            detail = x - base_o
    out = (base_o + detail) if detail is not None else base
    return out[0].detach().clamp(0, 1).float().cpu()


# ----------------------------------------------------------------------------------------------
# activation maximization


def _rfft2d_freqs(h: int, w: int):
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class _FFTImage:
    """lucent's decorrelated Fourier image: spectrum scaled by 1/f, /4, colour decorrelation,
    sigmoid -> [0,1]. `from_image` inverts it exactly (for initializing from a tile)."""

    def __init__(self, h, w, device, decorrelate: bool, decay_power: float = 1.0):
        self.h, self.w, self.decorrelate = h, w, decorrelate
        freqs = _rfft2d_freqs(h, w)
        self.scale = (1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power).to(device)
        c = torch.tensor(_COLOR_CORRELATION_SVD_SQRT, dtype=torch.float32)
        c = c / c.norm(dim=0).max()
        self.color = c.to(device)

    def image(self, spectrum):
        spec = torch.view_as_complex(spectrum) * self.scale
        x = torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho") / 4.0
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", self.color, x)
        return torch.sigmoid(x)

    def from_image(self, img):
        x = torch.logit(img.clamp(1e-3, 1 - 1e-3))
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.color), x)
        spec = torch.fft.rfft2(x * 4.0, norm="ortho") / self.scale
        return torch.view_as_real(spec).contiguous()


def activation_maximization(model, layer: str, channel: int, *, init="noise", size=None,
                            steps: int = 128, lr: float = 0.05, param: str = "fft",
                            jitter: int = 8, scale_jitter: float = 0.05, blur_every: int = 4,
                            blur_sigma: float = 0.5, weight_decay: float = 1e-3,
                            decorrelate: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                            device=None, seed: int = 0):
    """Optimize an input image (Adam) to maximize the mean activation of `channel` of `layer`.

    init: "noise" (an image of `size`, int or (H, W), default 128) or a 3×H×W image in [0,1]
    (e.g. a tile; `size` then resizes it).
    param: "fft" — lucent's decorrelated Fourier parameterization (spectrum scaled by 1/f, colour
    decorrelation when `decorrelate`, sigmoid to [0,1]): few high frequencies, so an image rather
    than noise; "pixel" — the pixels themselves, clipped to [0,1], with a Gaussian blur of
    `blur_sigma` px every `blur_every` steps (0: never).
    Regularization on both: a random roll of up to ±`jitter` px and a random rescale by up to
    ±`scale_jitter` at each step (robustness transforms), and `weight_decay`: the parameter is
    shrunk by this fraction each step, i.e. pulled towards mid-grey.
    The random draws come from a local generator seeded with `seed`: on the CPU a seed gives the
    same image every time; on CUDA the backward kernels (cuDNN's convolution and pooling
    gradients among them) are not deterministic, so the same seed gives a close but not
    bit-identical image. steps=0 returns the start image.

    Returns (image 3×H×W float32 in [0,1] on the CPU, trace): trace[i] is the objective (mean
    activation of the channel for the transformed image) at step i.
    """
    if param not in ("fft", "pixel"):
        raise ValueError(f"param must be 'fft' or 'pixel', got {param!r}")
    if steps < 0 or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    if not 0 <= weight_decay < 1:
        raise ValueError(f"weight_decay is a per-step fraction in [0, 1), got {weight_decay}")
    channel = int(channel)
    gen = torch.Generator().manual_seed(int(seed))
    dev = check_same_device(model, device)
    norm = _normalizer(mean, std, dev)

    if isinstance(init, str):
        if init != "noise":
            raise ValueError(f"init must be 'noise' or a 3×H×W image tensor, got {init!r}")
        s = 128 if size is None else size
        h, w = (int(s), int(s)) if np.isscalar(s) else (int(s[0]), int(s[1]))
        start = None
    else:
        start = _as_image(init, "init") if size is None else resize_image(init, size)
        h, w = start.shape[1:]

    if param == "fft":
        fft = _FFTImage(h, w, dev, decorrelate)
        if start is None:
            p0 = 0.01 * torch.randn(1, 3, h, w // 2 + 1, 2, generator=gen)
            p0 = p0.to(dev)
        else:
            p0 = fft.from_image(start.to(dev)[None])
        to_image = fft.image
    else:
        if start is None:
            p0 = (0.1 * torch.randn(1, 3, h, w, generator=gen)).clamp(-0.5, 0.5).to(dev)
        else:
            p0 = start.to(dev)[None] - 0.5
        to_image = lambda q: q + 0.5  # noqa: E731
    q = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=lr)
    trace: list[float] = []
    j = min(int(jitter), min(h, w) // 2)

    with eval_mode(model), capture(model, layer, stop=True) as cap:
        for step in range(steps):
            with torch.enable_grad():
                x = to_image(q)
                x, _ = _roll(x, gen, j)
                if scale_jitter > 0:
                    f = 1.0 + scale_jitter * (2 * float(torch.rand((), generator=gen)) - 1)
                    hw = (max(1, round(h * f)), max(1, round(w * f)))
                    x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
                act = cap.run(norm(x))
                if step == 0:
                    _check_channels(act, [channel], layer)
                obj = act[:, channel].mean()
                (g,) = torch.autograd.grad(-obj, q)
            trace.append(float(obj.detach()))
            q.grad = g
            opt.step()
            with torch.no_grad():
                if weight_decay:
                    q.mul_(1.0 - weight_decay)
                if param == "pixel":
                    if blur_every and (step + 1) % blur_every == 0:
                        q.copy_(_gaussian_blur(q + 0.5, blur_sigma) - 0.5)
                    q.clamp_(-0.5, 0.5)
        if steps == 0:  # still check the layer and channel exist
            with torch.no_grad():
                _check_channels(cap.run(norm(to_image(q))), [channel], layer)
    with torch.no_grad():
        img = to_image(q)[0]
    return img.detach().clamp(0, 1).float().cpu(), trace
