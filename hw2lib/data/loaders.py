"""Batches for training: `BatchLoader`, the fast path (the uint8 cache in memory, shuffled,
augmented and normalized a whole batch at a time on the training device), and `textbook_loader`, the
torchvision reference path (PIL + transforms.v2 + DataLoader workers) it is measured against."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hw2lib.core.constants import EUROSAT_MEAN, EUROSAT_STD
from hw2lib.core.runtime import to_device_once
from hw2lib.data import augment as A
from hw2lib.data.cache import Dataset


class BatchLoader:
    """Batches from an in-memory uint8 tensor, augmented whole on the device.

    Iterating yields (xb float32 normalized B×3×H×W — or resize×resize — on `device`, yb int64 on
    `device`); len() is the number of batches per epoch. Shuffling (a new order every epoch) and
    the augmentation's per-sample parameters (crops from the image zero-padded by `A.PADDING`,
    colour jitter of ±`A.JITTER`) all come from `self.generator` (CPU, seeded with `seed`), so a
    seed gives the same batches everywhere.
    On any device but the CPU the whole tensor is moved there once. `x` may also be float in [0, 1].
    The augmentation is `augment_batch`'s, with the normalization folded into the colour jitter.

    An epoch's augmentation parameters are drawn when its iteration starts — batch by batch, in
    the order per-batch drawing would take them, so the batches are the same — and go to the
    device in one copy per kind (pinned, non-blocking on CUDA); each batch takes its slice. No
    step waits for the device: the constants (luma weights, clip bounds, index ranges) live there.
    """

    def __init__(self, x, y, batch_size=128, *, shuffle=False, augment="none", device="cpu",
                 mean=EUROSAT_MEAN, std=EUROSAT_STD, resize=None, drop_last=False, seed=0):
        A.check_preset(augment)
        if x.ndim != 4 or x.shape[0] != len(y):
            raise ValueError(f"x must be N×C×H×W with N = len(y); got {tuple(x.shape)} and "
                             f"{len(y)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(mean) != x.shape[1] or len(std) != x.shape[1]:
            raise ValueError(f"mean and std need one value per channel ({x.shape[1]})")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.resize = resize
        self.targets = torch.as_tensor(y).to("cpu", torch.int64)
        self.num_samples = len(self.targets)
        self.generator = torch.Generator().manual_seed(int(seed))
        keep = "cpu" if self.device.type == "cpu" else self.device
        self._x = x.to(keep)
        self._y = self.targets.to(keep)
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        self.mean, self.std = tuple(mean), tuple(std)
        # pixel value v -> (v·scale − mean) / std as one multiply-add per channel
        self._scale = (scale / std_t).view(1, -1, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, -1, 1, 1).to(self.device)
        self._pixel_scale = scale
        self._mean_std = (mean_t.to(self.device), std_t.to(self.device))
        m, sd = self._mean_std
        self._clip = ((-m / sd).view(1, -1, 1, 1), ((1 - m) / sd).view(1, -1, 1, 1))
        self._gray = A.luma_weights(self.device)
        h, w = x.shape[-2:]
        self._aranges = (torch.arange(h, device=self.device), torch.arange(w, device=self.device))

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def _order(self) -> torch.Tensor:
        n = self.num_samples
        if self.shuffle:
            return torch.randperm(n, generator=self.generator)
        return torch.arange(n)

    def _batch_sizes(self) -> list[int]:
        n, b = self.num_samples, self.batch_size
        return [min(b, n - k * b) for k in range(len(self))]

    def _draw_epoch(self, sizes: list[int]) -> dict[str, torch.Tensor]:
        """This epoch's augmentation parameters for every batch (sample-wise concatenated), drawn
        batch by batch from `self.generator` and copied to the device once per kind."""
        if self.augment == "none" or not sizes:
            return {}
        d4 = self.augment == "d4"
        parts: dict[str, list[torch.Tensor]] = {}
        for b in sizes:
            drawn = A.draw_crop_flip(b, self.generator, A.PADDING, d4, d4)
            if self.augment == "color":
                drawn["color"] = A.draw_color(b, self.generator, A.JITTER)
            for k, v in drawn.items():
                parts.setdefault(k, []).append(v)
        return {k: to_device_once(torch.cat(v, dim=-1), self.device) for k, v in parts.items()}

    def _batch(self, idx: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """Batch `idx` with its augmentation `params` (this batch's slice of `_draw_epoch`'s)."""
        xb = self._x.index_select(0, idx)
        if xb.device != self.device:
            xb = xb.to(self.device, non_blocking=True)
        if self.augment != "none":
            xb = A.apply_crop_flip(xb, params, A.PADDING, self._aranges)
        xf = xb.to(torch.float32)
        if self.augment == "color":
            # jitter and normalization as one per-sample affine map, then a per-channel clip
            mat, shift = A.color_affine_from(xf, params["color"], self._gray)  # on [0, 1] pixels
            mean, std = self._mean_std
            s = self._pixel_scale
            mat_n = mat * (s / std).view(1, -1, 1)
            shift_n = (shift * s - mean) / std
            xf = A.apply_affine(xf, mat_n, shift_n)
            lo, hi = self._clip
            xf = torch.minimum(xf, hi, out=xf)
            xf = torch.maximum(xf, lo, out=xf)
        else:
            xf = xf.mul_(self._scale).add_(self._shift)
        if self.resize is not None and tuple(xf.shape[-2:]) != (self.resize, self.resize):
            xf = F.interpolate(xf, size=(self.resize, self.resize), mode="bilinear",
                               align_corners=False)
        return xf

    def __iter__(self):
        order = to_device_once(self._order(), self._x.device)
        sizes = self._batch_sizes()
        params = self._draw_epoch(sizes)
        start = 0
        for b in sizes:
            idx = order[start:start + b]
            mine = {k: v[..., start:start + b] for k, v in params.items()}
            start += b
            yield self._batch(idx, mine), self._y.index_select(0, idx).to(self.device)


# --------------------------------------------------------------------------- the textbook path


class _FileDataset(torch.utils.data.Dataset):
    """(transform(PIL image), label) read from disk, like torchvision's ImageFolder."""

    def __init__(self, files: list[str], targets: list[int], transform):
        self.files, self.targets, self.transform = files, targets, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            img = im.convert("RGB")
        return self.transform(img), self.targets[i]


def _pil_transpose(im):
    from PIL import Image

    return im.transpose(Image.Transpose.TRANSPOSE)


def _textbook_transform(preset: str, image_size: int = 64, *, mean=EUROSAT_MEAN, std=EUROSAT_STD,
                        resize=None):
    """The classic torchvision pipeline of a preset on the PIL image, then to a normalized float
    tensor. The image is first resized to image_size if it has another size (as the cache is).

    The crop and flips are distributed as `augment_batch`'s. The colour jitter is torchvision's
    `ColorJitter` with the same factor ranges, but it applies brightness, contrast and saturation
    in a random order per image, each on the 8-bit PIL image (rounded and clipped after every
    step), where `augment_batch` applies them in that fixed order and clips once: the two presets
    are close, not the same distribution. `resize` scales the normalized tensor (bilinear,
    antialiased: equal to BatchLoader's when enlarging, smoother when shrinking)."""
    from torchvision.transforms import v2

    A.check_preset(preset)
    t = [v2.Resize((image_size, image_size))]  # a no-op at that size already
    if preset in ("basic", "color", "d4"):
        t += [v2.RandomCrop(image_size, padding=A.PADDING), v2.RandomHorizontalFlip()]
        if preset == "d4":
            t.append(v2.RandomVerticalFlip())
    if preset == "d4":  # a random transposition completes the 8 symmetries
        t.append(v2.RandomApply([v2.Lambda(_pil_transpose)], p=0.5))
    if preset == "color":
        t.append(v2.ColorJitter(brightness=A.JITTER, contrast=A.JITTER, saturation=A.JITTER))
    t += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if resize is not None:
        t.append(v2.Resize((resize, resize), antialias=True))
    return v2.Compose(t)


def textbook_loader(ds: Dataset, split, *, batch_size=128, augment="none", num_workers=2,
                    shuffle=False, mean=EUROSAT_MEAN, std=EUROSAT_STD, resize=None, seed=0,
                    drop_last=False, pin_memory=False):
    """The reference path: the split's images read from disk with PIL, the preset as
    torchvision.transforms.v2 (see `_textbook_transform` for how it differs from BatchLoader's),
    and a `torch.utils.data.DataLoader` with `num_workers` (persistent) worker processes. Batches
    are on the CPU (in pinned memory with `pin_memory`, for a non-blocking copy to a GPU; a
    benchmark also drops the short last batch with `drop_last`). Its generator (seeded) drives the
    shuffling and the workers' random seeds; with num_workers=0 the augmentation draws from
    torch's global random state instead."""
    rows = ds.indices(split)
    files = [str(ds.root / ds.paths[r]) for r in rows]
    targets = ds.y[torch.from_numpy(rows)].tolist()
    transform = _textbook_transform(augment, int(ds.x.shape[-1]), mean=mean, std=std,
                                    resize=resize)
    return torch.utils.data.DataLoader(
        _FileDataset(files, targets, transform), batch_size=batch_size, shuffle=shuffle,
        num_workers=num_workers, persistent_workers=num_workers > 0, drop_last=drop_last,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(int(seed)))
