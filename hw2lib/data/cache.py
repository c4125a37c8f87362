"""The dataset in memory: every image decoded once into a uint8 tensor cache under data_dir/cache,
and `load_dataset`, which gets, verifies, splits and caches it in one call."""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hw2lib.core.constants import SPLIT_FRACTIONS, SPLITS
from hw2lib.core.io import atomic_write, remove_stale_temps
from hw2lib.data.common import (
    DataArgumentError,
    DataError,
    DataWarning,
    run_chunks,
    safe_name,
    sha_of,
)
from hw2lib.data.folders import Listing, verified
from hw2lib.data.sources import eurosat_listing
from hw2lib.data.splits import check_fractions, check_split_coverage, split_file

_CACHE_VERSION = 3  # bump when the cache's content or layout changes (3: the pixels' digest)
_STALE_TEMP_S = 600  # a cache temp file untouched this long is a killed write's leftover

# what decoding did to an image to make it size×size RGB, as counted in the cache
CONVERSIONS = ("resized", "alpha", "gray", "colour")
_GRAY_MODES = {"L", "LA", "1", "I", "I;16", "F"}


def _decode_resized(path: Path, size: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """One image as uint8 3×size×size RGB, and what was done to it (names from CONVERSIONS): PIL
    decodes it, converts it to RGB (an alpha channel is dropped, gray is repeated) and, when it has
    another size, resizes it (bilinear, antialiased) — what textbook_loader's transforms do."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            done = []
            if im.has_transparency_data:
                done.append("alpha")
            if im.mode in _GRAY_MODES:
                done.append("gray")
            elif im.mode not in ("RGB", "RGBA", "RGBX", "P", "PA"):
                done.append("colour")  # CMYK, YCbCr, ...
            img = im.convert("RGB")
    except Exception as exc:
        raise DataError(f"cannot decode image {path}: {exc}; replace it") from exc
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        done.append("resized")
    return torch.from_numpy(np.array(img)).permute(2, 0, 1), tuple(done)


def _build_cache(root: Path, paths: list[str], size: int,
                 progress: bool) -> tuple[torch.Tensor, dict[str, int]]:
    x = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    counts: Counter = Counter()
    lock = threading.Lock()

    def work(a, b):
        local: Counter = Counter()
        for i in range(a, b):
            x[i], done = _decode_resized(root / paths[i], size)
            local.update(done)
        with lock:
            counts.update(local)

    run_chunks(work, len(paths), progress=progress, desc=f"decoding images to {size}x{size}")
    return x, {k: int(counts[k]) for k in CONVERSIONS if counts[k]}


def pixels_digest(x: torch.Tensor) -> str:
    """sha256 of a uint8 image tensor's bytes (what the cache holds), without copying it."""
    return hashlib.sha256(memoryview(x.contiguous().numpy()).cast("B")).hexdigest()


def _cached_images(data_dir: Path, name: str, listing: Listing, split_text: str,
                   paths: list[str], size: int,
                   progress: bool) -> tuple[torch.Tensor, Path, dict[str, int], str]:
    """(images, cache file, conversions, the images' digest). The digest is written with the
    cache and checked each time it is read: a damaged cache is rebuilt (a warning), never used."""
    key = sha_of(_CACHE_VERSION, listing.signature, split_text, size)
    path = data_dir / "cache" / f"{name}-{size}px-{key[:16]}.pt"
    shape = (len(paths), 3, size, size)
    remove_stale_temps(path.parent, older_than=_STALE_TEMP_S)
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if blob.get("key") == key and tuple(blob["x"].shape) == shape:
                digest = pixels_digest(blob["x"])
                if digest == blob.get("digest"):
                    return blob["x"], path, dict(blob["conversions"]), digest
                warnings.warn(f"the cache {path} does not match the digest written when it was "
                              "built (its images were damaged on disk): rebuilding it",
                              DataWarning, stacklevel=3)
        except Exception as exc:  # a damaged cache file is rebuilt, never trusted
            warnings.warn(f"rebuilding the unreadable cache {path} ({exc})", DataWarning,
                          stacklevel=3)
    x, conversions = _build_cache(listing.root, paths, size, progress)
    digest = pixels_digest(x)
    blob = {"key": key, "x": x, "root": str(listing.root), "image_size": size,
            "conversions": conversions, "digest": digest}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))
    return x, path, conversions, digest


def _plural(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s")


def conversion_message(conversions: dict[str, int], size: int) -> str:
    """What decoding changed, in words ("" when nothing): "resized 12 images of other sizes to
    64×64; dropped the alpha channel of 3 images"."""
    words = {"resized": f"resized {{}} of other sizes to {size}×{size}",
             "alpha": "dropped the alpha channel (transparency) of {}",
             "gray": "repeated the one channel of {} (grayscale) as RGB",
             "colour": "converted {} in other colour modes (CMYK, YCbCr, ...) to RGB"}
    return "; ".join(words[k].format(_plural(n, "image")) for k, n in conversions.items() if n)


# --------------------------------------------------------------------------- the dataset


@dataclass(repr=False)
class Dataset:
    """Every image of the dataset in split-file order: `x` uint8 N×3×S×S, `y` int64 N, `split`
    ("train"/"val"/"test" per image) and `paths` (relative to `root`, as in the split file);
    `conversions`: how many images decoding resized or converted ({"resized": n, "alpha": n,
    "gray": n, "colour": n}, zeros left out)."""

    root: Path
    classes: list[str]
    split_csv: Path
    cache_path: Path
    x: torch.Tensor
    y: torch.Tensor
    split: np.ndarray
    paths: list[str]
    conversions: dict[str, int] = field(default_factory=dict)
    cache_digest: str = ""  # sha256 of x's bytes, checked against the cache file's record

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def indices(self, split: str) -> np.ndarray:
        """Rows (into x, y) of one split, in split-file order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        return np.flatnonzero(self.split == split)

    def tensors(self, split: str, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of one split; `indices`: positions within that split (e.g. a long-tail subset)."""
        rows = self.indices(split)
        if indices is not None:
            rows = rows[np.asarray(indices, dtype=np.int64)]
        rows = torch.from_numpy(rows)
        return self.x[rows], self.y[rows]

    def class_counts(self, split: str) -> list[int]:
        """Images per class in one split."""
        return np.bincount(self.y.numpy()[self.indices(split)],
                           minlength=self.num_classes).tolist()

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s} {int((self.split == s).sum()):,}" for s in SPLITS)
        return (f"Dataset({len(self):,} images {tuple(self.x.shape[1:])} uint8, "
                f"{self.num_classes} classes, {sizes}; root={self.root})")


def _check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 1:
        raise DataArgumentError(f"image_size must be a positive whole number of pixels (the side "
                                f"of the square every image is decoded to, e.g. 64), got "
                                f"{image_size!r}")
    return int(image_size)


def load_dataset(data_dir="data", *, source=None, image_folder=None, image_size=64, split_seed=0,
                 fractions=SPLIT_FRACTIONS, progress=True) -> Dataset:
    """EuroSAT (via `prepare_eurosat(data_dir, source)`) or any ImageFolder root (`image_folder`,
    verified without fixed counts; class names from its folders), split and cached.

    - Split: stratified and seeded (`split_seed`, `fractions` train/val/test), written once to
      `data_dir/splits/<name>-seed<seed>-<60-20-20>.csv` (`path,label,class,split`) and reused;
      the same seed writes the same bytes. A split file edited by hand is honoured (rows may be
      reordered or moved between splits); one that lists other images is rewritten (a warning).
      A split asked for (fraction > 0) that is empty is a `DataError`; a class missing from one
      (it has fewer than 3 images) a `DataWarning`.
    - Cache: every image decoded once (converted to RGB, resized to `image_size` when it has
      another size) into a uint8 tensor in `data_dir/cache/`, keyed by the folder's listing, the
      split file's content and the size, written atomically with the sha256 of its pixels and
      loaded memory-mapped; the digest is checked at every read (a mismatch: a warning and a
      rebuild) and is `Dataset.cache_digest`, part of every run's identity. When any
      image was resized or converted, one `DataWarning` counts them (each call).

    Bad arguments raise `DataArgumentError` (a `DataError` and a `ValueError`).
    """
    data_dir = Path(data_dir)
    if image_folder is not None and source is not None:
        raise DataArgumentError("give either source (EuroSAT: a zip or an extracted folder) or "
                                "image_folder (any other ImageFolder root), not both")
    image_size = _check_image_size(image_size)
    fractions = check_fractions(fractions)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} (`hw2 data --data-dir`) is a file, not a folder: give "
                        "the folder where extracted data, splits and caches go")
    if image_folder is not None:
        listing = verified(Path(image_folder), None, data_dir, progress)
        name = f"{safe_name(listing.root.resolve().name)}-{sha_of(listing.root.resolve())[:8]}"
    else:
        listing = eurosat_listing(data_dir, source, True, progress)
        name = "eurosat"
    split_csv, split_text, (paths, labels, splits) = split_file(data_dir, name, listing,
                                                                split_seed, fractions)
    check_split_coverage(split_csv, listing.classes, labels, splits, fractions)
    x, cache_path, conversions, digest = _cached_images(data_dir, name, listing, split_text,
                                                        paths, image_size, progress)
    if conversions:
        warnings.warn(f"images in {listing.root}: {conversion_message(conversions, image_size)}",
                      DataWarning, stacklevel=2)
    return Dataset(root=listing.root, classes=list(listing.classes), split_csv=split_csv,
                   cache_path=cache_path, x=x, y=torch.tensor(labels, dtype=torch.int64),
                   split=np.array(splits), paths=paths, conversions=conversions,
                   cache_digest=digest)
