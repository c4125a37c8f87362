"""Which image goes where: the seeded, stratified split file (60/20/20), per-class subsets of the
splits, and the long-tailed training subset."""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

from hw2lib.core.constants import SPLITS
from hw2lib.core.io import atomic_write_text
from hw2lib.data.common import DataArgumentError, DataError, DataWarning
from hw2lib.data.folders import Listing

SPLIT_HEADER = ["path", "label", "class", "split"]


# --------------------------------------------------------------------------- the split file


def check_fractions(fractions) -> tuple[float, float, float]:
    f = tuple(float(v) for v in fractions)
    if len(f) != 3 or min(f) < 0 or f[0] <= 0 or abs(sum(f) - 1) > 1e-6:
        raise DataArgumentError(f"fractions must be three numbers (train, val, test) >= 0 with "
                                f"train > 0 that sum to 1, got {fractions}")
    return f


def _split_sizes(n: int, fractions) -> list[int]:
    """Images of a class of n in train, val, test: rounded shares, test taking the rest; a class
    of 3 or more images has at least one in each split whose fraction is not 0."""
    sizes = [int(math.floor(n * f + 0.5)) for f in fractions[:2]]
    sizes.append(n - sum(sizes))
    if sizes[2] < 0:
        sizes[1] += sizes[2]
        sizes[2] = 0
    for k in (1, 2):
        if n >= 3 and fractions[k] > 0 and sizes[k] == 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[k] = 1
    return sizes


def _split_csv_text(listing: Listing, seed: int, fractions) -> str:
    rng = np.random.default_rng(seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SPLIT_HEADER)
    for label, (c, names) in enumerate(zip(listing.classes, listing.files, strict=True)):
        n_train, n_val, _ = _split_sizes(len(names), fractions)
        which = np.full(len(names), "test", dtype=object)
        perm = rng.permutation(len(names))
        which[perm[:n_train]] = "train"
        which[perm[n_train:n_train + n_val]] = "val"
        for name, s in zip(names, which, strict=True):
            w.writerow([f"{c}/{name}", label, c, s])
    return buf.getvalue()


def _parse_split(path: Path, text: str, listing: Listing):
    """(paths, labels, splits) of a split file; None when it lists other images than `listing`."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != SPLIT_HEADER:
        raise DataError(f"split file {path} does not start with the header "
                        f"{','.join(SPLIT_HEADER)}; move it away to have a new one written")
    index = {c: i for i, c in enumerate(listing.classes)}
    paths, labels, splits = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        ok = (len(row) == 4 and row[2] in index and row[1] == str(index[row[2]])
              and row[3] in SPLITS and row[0].startswith(row[2] + "/"))
        if not ok:
            if len(row) == 4 and row[2] not in index:
                return None  # a class that is not in the folder any more
            raise DataError(f"split file {path}, line {line}: {','.join(row)!r} is not "
                            f"'<Class>/<file>,<label>,<Class>,<{'|'.join(SPLITS)}>' with the "
                            f"folder's classes {listing.classes}; fix it or move it away")
        paths.append(row[0])
        labels.append(int(row[1]))
        splits.append(row[3])
    if len(set(paths)) != len(paths) or set(paths) != set(listing.paths()):
        return None
    return paths, labels, splits


def read_split_text(path: Path) -> str:
    """A split file's text: UTF-8, with or without a byte-order mark (a spreadsheet may save one);
    another encoding is a DataError naming the file."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"split file {path} is not UTF-8 text (byte {exc.start}: "
                        f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8 or move it "
                        "away to have a new one written") from None


def split_file(data_dir: Path, name: str, listing: Listing, seed: int, fractions):
    """(path, text, (paths, labels, splits)) of the split file of `listing`: the one under
    data_dir/splits/ when it lists exactly the folder's images, else a new one (a warning when it
    replaces one)."""
    pct = "-".join(f"{100 * f:g}" for f in fractions)
    path = data_dir / "splits" / f"{name}-seed{seed}-{pct}.csv"
    if path.exists():
        text = read_split_text(path)
        parsed = _parse_split(path, text, listing)
        if parsed is not None:
            return path, text, parsed
        warnings.warn(f"split file {path} lists other images than {listing.root} holds now: "
                      "writing a new one", DataWarning, stacklevel=3)
    text = _split_csv_text(listing, seed, fractions)
    atomic_write_text(path, text)
    return path, text, _parse_split(path, text, listing)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def check_split_coverage(path: Path, classes: list[str], labels, splits, fractions) -> None:
    """Every split asked for (fraction > 0) must hold images: an empty one is a DataError; a class
    missing from a split (a class of 1 or 2 images cannot reach all three) is a DataWarning that
    names the classes and splits."""
    labels, splits = np.asarray(labels), np.asarray(splits)
    total = np.bincount(labels, minlength=len(classes))
    asked = [s for s, f in zip(SPLITS, fractions, strict=True) if f > 0]
    empty = [s for s in asked if not (splits == s).any()]
    if empty:
        small = [c for c, n in zip(classes, total, strict=True) if n < 3]
        why = (f"every class has fewer than 3 images ({', '.join(small)})"
               if len(small) == len(classes) else "the split file puts no image there")
        raise DataError(f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} "
                        f"empty in {path}: {why}; give each class at least 3 images, set "
                        f"{'their fractions' if len(empty) > 1 else 'its fraction'} to 0, or edit "
                        "the split file")
    gaps = []
    for s in asked:
        have = np.bincount(labels[splits == s], minlength=len(classes))
        missing = [f"{c} ({_plural(int(total[k]), 'image')})"
                   for k, c in enumerate(classes) if have[k] == 0]
        if missing:
            gaps.append(f"the {s} split has no image of {', '.join(missing)}")
    if gaps:
        warnings.warn(f"{'; '.join(gaps)} (split file {path}): a class needs at least 3 images to "
                      "appear in train, val and test; add images to these classes or expect no "
                      "score for them there", DataWarning, stacklevel=3)


# --------------------------------------------------------------------------- subsets of splits


def subsample_per_class(labels, per_class: int | None, *, seed: int = 0) -> np.ndarray:
    """Positions of at most `per_class` items of each class (seeded); all positions when None."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    if per_class <= 0:
        raise ValueError(f"per_class must be a positive number of images or None, got {per_class}")
    rng = np.random.default_rng(seed)
    keep = [np.zeros(0, dtype=np.int64)]  # an empty split gives an empty subset
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        keep.append(np.sort(rng.permutation(pos)[:per_class]))
    return np.sort(np.concatenate(keep))


def split_indices(ds, *, train_per_class=None, val_per_class=None, test_per_class=None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Dataset rows of each split, optionally capped per class (a seeded, stratified subset)."""
    out = {}
    for split, cap in (("train", train_per_class), ("val", val_per_class),
                       ("test", test_per_class)):
        rows = np.asarray(ds.indices(split))
        out[split] = rows[subsample_per_class(ds.y[rows].numpy(), cap, seed=seed)]
    return out


# --------------------------------------------------------------------------- the long tail


def long_tail_indices(labels, num_classes, *, rho=100.0, n_max=None, seed=0,
                      counts=None) -> tuple[np.ndarray, list[int]]:
    """A long-tailed subset of a (training) label array: (sorted positions into `labels`, images
    per class indexed by class).

    Profile: the class at place i of a seeded random class order keeps
    n_i = round(n_max · rho^(−i/(C−1))) images (at least 1), n_max defaulting to the largest class's
    count. A class with fewer images than its n_i keeps all it has, and later places are capped at
    that so the counts never rise along the order. `counts` (one number per class, by class
    index) replaces the profile. Which images a class keeps is seeded too: the same arguments
    always give the same subset.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        raise ValueError(f"labels must be a 1-D array of class indices in [0, {num_classes})")
    avail = np.bincount(labels, minlength=num_classes)
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_classes)
    if counts is not None:
        want = np.asarray(counts, dtype=np.int64)
        if want.shape != (num_classes,) or (want < 0).any():
            raise ValueError(f"counts must be {num_classes} non-negative numbers (one per class), "
                             f"got {counts}")
        over = np.flatnonzero(want > avail)
        if over.size:
            c = int(over[0])
            raise ValueError(f"counts asks for {want[c]} images of class {c}, which has only "
                             f"{avail[c]}")
    else:
        if rho < 1:
            raise ValueError(f"rho (imbalance ratio n_max / n_min) must be >= 1, got {rho}")
        top = int(avail.max()) if n_max is None else int(n_max)
        if top < 1:
            raise ValueError(f"n_max must be >= 1, got {n_max}")
        want = np.zeros(num_classes, dtype=np.int64)
        cap = top
        for i, c in enumerate(order):
            n = max(1, int(math.floor(top * float(rho) ** (-i / max(num_classes - 1, 1)) + 0.5)))
            want[c] = min(cap, n, int(avail[c]))
            if avail[c]:  # an absent class keeps 0 without lowering the later ones
                cap = int(want[c])
    keep = []
    for c in range(num_classes):
        pos = np.flatnonzero(labels == c)
        keep.append(rng.permutation(pos)[:want[c]])
    idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return idx.astype(np.int64), [int(v) for v in want]
