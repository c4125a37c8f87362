"""The data layer: EuroSAT RGB (or any ImageFolder) from archive to augmented batches.

    archive / folder ──verify──► data/eurosat/2750/<Class>/*.jpg ──► data/splits/*.csv (seeded 60/20/20)
        ──► data/cache/*.pt (every image decoded once: uint8 N×3×S×S) ──► BatchLoader (whole-batch
        augmentation with torch ops on the training device) or textbook_loader (torchvision reference)

- `prepare_eurosat` finds the archive (argument, $HW2_EUROSAT_ZIP, data/EuroSAT.zip,
  ../shared/data/EuroSAT.zip, download), extracts it through a temporary folder and verifies it.
- `verify_imagefolder` checks the class folders, counts and that every image decodes.
- `load_dataset` returns a `Dataset`: images, labels and the split of every image, from the cache.
- `long_tail_indices` draws an exponentially imbalanced training subset.
- `BatchLoader` / `augment_batch`: the fast path; `textbook_loader`: the torchvision one.

Nothing here runs at import time. Generated files are written atomically (temp file + rename); no
file of the user's is ever deleted or changed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

EUROSAT_URL = ("https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
               "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip")  # torchvision's
EUROSAT_MD5 = "c8fa014336c82ac7804f0398fcb19387"
EUROSAT_COUNTS = {
    "AnnualCrop": 3000, "Forest": 3000, "HerbaceousVegetation": 3000, "Highway": 2500,
    "Industrial": 2500, "Pasture": 2000, "PermanentCrop": 2500, "Residential": 3000,
    "River": 2500, "SeaLake": 3000,
}
EUROSAT_CLASSES = tuple(sorted(EUROSAT_COUNTS))
EUROSAT_MEAN = (0.3444, 0.3803, 0.4078)  # per channel, all 27,000 images, pixels in [0, 1]
EUROSAT_STD = (0.2027, 0.1369, 0.1156)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ENV_ZIP = "HW2_EUROSAT_ZIP"
SPLITS = ("train", "val", "test")
AUGMENT_PRESETS = ("none", "basic", "color")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLIT_HEADER = ["path", "label", "class", "split"]

_CACHE_VERSION = 1  # bump when the cache's content or layout changes
_RGB_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr"}
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


class DataError(RuntimeError):
    """The data is missing or not what it should be; the message names the file and the fix."""


# --------------------------------------------------------------------------- small helpers


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _run_chunks(fn, n: int, *, progress: bool, desc: str, chunk: int = 256) -> None:
    """Call `fn(start, stop)` over [0, n) in chunks on a small thread pool (JPEG decoding releases
    the GIL), with a tqdm bar counting items. The first error (in item order) is raised."""
    from tqdm import tqdm

    bounds = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        ex = ThreadPoolExecutor(_workers())
        try:
            futures = [ex.submit(fn, a, b) for a, b in bounds]
            for fut, (a, b) in zip(futures, bounds, strict=True):
                fut.result()
                bar.update(b - a)
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "images"


# --------------------------------------------------------------------------- verification


@dataclass
class _Listing:
    """What an ImageFolder root holds: class folders (sorted) and their image files (sorted)."""

    root: Path
    classes: list[str]
    files: list[list[str]]
    signature: str  # hash of every relative path, size and mtime

    def counts(self) -> dict[str, int]:
        return {c: len(f) for c, f in zip(self.classes, self.files, strict=True)}

    def paths(self) -> list[str]:
        return [f"{c}/{n}" for c, names in zip(self.classes, self.files, strict=True) for n in names]


def _visible(entries):
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(root: Path) -> _Listing:
    """List an ImageFolder root; structural problems (no class folder, an empty class folder, a
    file that does not belong) are errors naming the file or folder. Hidden files are ignored."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what}: give the folder that holds one sub-folder of "
                        "images per class (<root>/<Class>/*.jpg)")
    h = hashlib.sha256()
    classes: list[str] = []
    with os.scandir(root) as it:
        for e in _visible(it):
            if not e.is_dir():
                raise DataError(f"unexpected file {root / e.name}: the root of an image folder holds "
                                "only class folders; move the file elsewhere (nothing is deleted)")
            classes.append(e.name)
    if not classes:
        raise DataError(f"image folder {root} has no class folders: expected <root>/<Class>/*.jpg")
    files: list[list[str]] = []
    for c in classes:
        names = []
        with os.scandir(root / c) as it:
            for e in _visible(it):
                if e.is_dir():
                    raise DataError(f"unexpected folder {root / c / e.name}: a class folder holds "
                                    "only images; move it elsewhere (nothing is deleted)")
                if not e.name.lower().endswith(IMAGE_EXTENSIONS):
                    raise DataError(f"unexpected file {root / c / e.name}: not an image "
                                    f"({', '.join(IMAGE_EXTENSIONS)}); move it out of the class "
                                    "folder (nothing is deleted)")
                st = e.stat()
                h.update(f"{c}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
                names.append(e.name)
        if not names:
            raise DataError(f"empty class folder {root / c}: every class needs at least one image; "
                            "add its images or remove the folder")
        files.append(names)
    return _Listing(root, classes, files, h.hexdigest())


def _check_counts(counts: dict[str, int], expected: dict[str, int], where, what: str) -> None:
    """Compare class counts with `expected`; `where(c)` names class c's folder in messages."""
    for c in expected:
        if c not in counts:
            raise DataError(f"missing or empty class folder {where(c)}: {what} has the classes "
                            f"{', '.join(expected)}")
    for c in counts:
        if c not in expected:
            raise DataError(f"unexpected folder {where(c)}: {what} has exactly the classes "
                            f"{', '.join(expected)}; move it elsewhere (nothing is deleted)")
    for c, n in expected.items():
        if counts[c] != n:
            raise DataError(f"class folder {where(c)} holds {counts[c]} images, {what} has {n}: the "
                            "copy is incomplete or altered; use a complete archive")


def _check_image(src, name) -> None:
    """Decode one image fully (path or bytes); a truncated or undecodable file is a DataError."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            im.load()
            mode = im.mode
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise DataError(f"cannot decode image {name}: {exc} (a truncated or damaged file); "
                        "replace it with a good copy") from exc
    if mode not in _RGB_MODES:
        raise DataError(f"image {name} has pixel mode {mode!r}, not an RGB-convertible image "
                        "(8-bit RGB, grayscale or palette expected)")


def _decode_check(listing: _Listing, progress: bool) -> None:
    paths = [listing.root / p for p in listing.paths()]

    def work(a, b):
        for p in paths[a:b]:
            _check_image(p, p)

    _run_chunks(work, len(paths), progress=progress, desc="verifying images")


def verify_imagefolder(root, expected_counts=None, *, check_decode=True,
                       progress=False) -> dict[str, int]:
    """Check an ImageFolder root (<root>/<Class>/<image>) and return {class: number of images}.

    Errors (`DataError`) name the file or folder: a missing root, no class folder, an empty or
    (with `expected_counts`) missing class folder, a wrong count, a file that is not an image or
    sits at the root, a sub-folder in a class folder, and — with `check_decode` — an image that does
    not decode completely (truncated or damaged) as an RGB-convertible picture. Hidden files
    (names starting with ".") are ignored. Nothing is changed or deleted.
    """
    listing = _scan(Path(root))
    if expected_counts is not None:
        _check_counts(listing.counts(), dict(expected_counts), lambda c: listing.root / c,
                      f"the dataset in {listing.root}")
    if check_decode:
        _decode_check(listing, progress)
    return listing.counts()


def _marker_path(data_dir: Path, root: Path) -> Path:
    root = Path(root).resolve()
    return data_dir / "cache" / f"verified-{_safe_name(root.name)}-{_sha(root)[:12]}.json"


def _verified(root: Path, expected, data_dir: Path, progress: bool) -> _Listing:
    """`verify_imagefolder` with a marker file under data_dir/cache: the full decode runs again
    only when the folder's listing (names, sizes, modification times) has changed."""
    listing = _scan(root)
    if expected is not None:
        _check_counts(listing.counts(), expected, lambda c: listing.root / c,
                      f"EuroSAT ({sum(expected.values()):,} images)")
    sig = _sha(listing.signature, json.dumps(expected, sort_keys=True))
    marker = _marker_path(data_dir, listing.root)
    try:
        if json.loads(marker.read_text()).get("signature") == sig:
            return listing
    except (OSError, ValueError):
        pass
    _decode_check(listing, progress)
    _write_marker(marker, listing, sig)
    return listing


def _write_marker(marker: Path, listing: _Listing, sig: str) -> None:
    info = {"root": str(listing.root.resolve()), "signature": sig, "counts": listing.counts(),
            "images": sum(len(f) for f in listing.files),
            "verified": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _atomic_write_bytes(marker, json.dumps(info, indent=1).encode())


# --------------------------------------------------------------------------- getting EuroSAT


def _repo_shared_zip() -> Path:
    """../shared/data/EuroSAT.zip beside the source checkout (repo root = parent of hw2lib/)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "EuroSAT.zip"


def _where_to_put(data_dir: Path, why: str) -> str:
    return (f"EuroSAT is not available: {why}. Do one of: put the archive (EuroSAT.zip, the RGB "
            f"version with 2750/<Class>/*.jpg) at {(data_dir / 'EuroSAT.zip').absolute()} or at "
            f"{Path('../shared/data/EuroSAT.zip').absolute()}; set {ENV_ZIP}=/path/to/EuroSAT.zip; "
            "pass source=PATH (`hw2 data --source PATH`, a zip or an extracted folder); or connect "
            f"to the internet so that it can be downloaded from {EUROSAT_URL}")


def _find_source(data_dir: Path, source) -> Path | None:
    if source is not None:
        p = Path(source).expanduser()
        if not p.exists():
            raise DataError(f"source {p} does not exist: give a EuroSAT zip or extracted folder")
        return p
    env = os.environ.get(ENV_ZIP)
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise DataError(f"${ENV_ZIP} points to {p}, which does not exist: point it at "
                            "EuroSAT.zip or unset it")
        return p
    for p in (data_dir / "EuroSAT.zip", Path("../shared/data/EuroSAT.zip"), _repo_shared_zip()):
        if p.is_file():
            return p
    return None


def _folder_root(p: Path) -> Path:
    """An extracted EuroSAT folder given as source: the 2750 folder, its parent, or the parent's
    parent (torchvision's root holding eurosat/2750)."""
    for cand in (p / "2750", p / "eurosat" / "2750"):
        if cand.is_dir():
            return cand
    return p


def _download(data_dir: Path) -> Path:
    from torchvision.datasets.utils import download_url

    data_dir.mkdir(parents=True, exist_ok=True)
    part = data_dir / "EuroSAT.zip.part"
    try:
        download_url(EUROSAT_URL, str(data_dir), filename=part.name, md5=EUROSAT_MD5)
    except Exception as exc:  # URLError, HTTPError, timeouts, md5 mismatch, ...
        raise DataError(_where_to_put(data_dir, f"nothing found locally and the download "
                                                f"failed ({type(exc).__name__}: {exc})")) from exc
    target = data_dir / "EuroSAT.zip"
    os.replace(part, target)
    return target


def _zip_members(zf: zipfile.ZipFile, zip_path: Path, expected: dict[str, int]):
    """[(member, class, file name)] of the archive's images, after checking its structure against
    `expected`. The images sit in <prefix><Class>/<file> (prefix "2750/" in the official one)."""
    files = [i for i in zf.infolist() if not i.is_dir()
             and not any(p.startswith(".") or p == "__MACOSX" for p in i.filename.split("/"))]
    prefixes: dict[str, int] = {}
    for i in files:
        parts = i.filename.split("/")
        if len(parts) >= 2 and i.filename.lower().endswith(IMAGE_EXTENSIONS):
            pre = "/".join(parts[:-2] + [""]) if len(parts) > 2 else ""
            prefixes[pre] = prefixes.get(pre, 0) + 1
    if not prefixes:
        raise DataError(f"{zip_path} holds no images in class folders (expected 2750/<Class>/*.jpg): "
                        "is it the EuroSAT RGB archive?")
    prefix = max(prefixes, key=prefixes.get)
    members = []
    for i in files:
        rest = i.filename[len(prefix):].split("/") if i.filename.startswith(prefix) else []
        if len(rest) != 2 or not rest[1].lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"unexpected file {i.filename} in {zip_path}: EuroSAT's archive holds only "
                            f"images in {prefix}<Class>/; use the official archive")
        members.append((i, rest[0], rest[1]))
    counts: dict[str, int] = {}
    for _, c, _ in members:
        counts[c] = counts.get(c, 0) + 1
    _check_counts(counts, expected, lambda c: f"{prefix}{c}/ in {zip_path}",
                  f"EuroSAT ({sum(expected.values()):,} images)")
    return sorted(members, key=lambda m: (m[1], m[2]))


def _extract(zip_path: Path, target: Path, data_dir: Path, expected, progress: bool) -> None:
    """Check and extract the archive's images into a temporary folder inside data_dir, decoding
    each one as it goes, then rename the finished folder to `target` in one step."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{zip_path} is not a readable zip archive ({exc}): download it again or "
                        "point source / $HW2_EUROSAT_ZIP at a good copy") from exc
    with zf:
        members = _zip_members(zf, zip_path, expected)
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob(".eurosat-extract-*"):  # our own leftovers of a killed extraction
        if time.time() - old.stat().st_mtime > 6 * 3600:
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".eurosat-extract-", dir=data_dir))
    handles, lock, local = [], threading.Lock(), threading.local()
    try:
        dest = tmp / target.name
        for c in sorted({m[1] for m in members}):
            (dest / c).mkdir(parents=True)

        def work(a, b):
            if not hasattr(local, "zf"):
                local.zf = zipfile.ZipFile(zip_path)
                with lock:
                    handles.append(local.zf)
            for info, c, name in members[a:b]:
                try:
                    data = local.zf.read(info)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    raise DataError(f"cannot read {info.filename} from {zip_path} ({exc}): the "
                                    "archive is damaged; download it again") from exc
                _check_image(data, f"{info.filename} in {zip_path}")
                (dest / c / name).write_bytes(data)

        _run_chunks(work, len(members), progress=progress, desc="extracting EuroSAT")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(dest, target)
        except OSError:
            if not target.is_dir():  # else another process finished the same extraction first
                raise
    finally:
        for h in handles:
            h.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _prepare_eurosat(data_dir: Path, source, download: bool, progress: bool) -> _Listing:
    expected = dict(EUROSAT_COUNTS)
    target = data_dir / "eurosat" / "2750"
    src = None
    if source is not None or not target.exists():
        src = _find_source(data_dir, source)
    if src is not None and src.is_dir():
        return _verified(_folder_root(src), expected, data_dir, progress)
    if target.exists():
        try:
            return _verified(target, expected, data_dir, progress)
        except DataError as exc:
            raise DataError(f"{target} exists but is not a complete, intact EuroSAT: {exc}. It was "
                            "left as it is: repair it, or move it away to extract the archive again"
                            ) from exc
    if src is None:
        if not download:
            raise DataError(_where_to_put(data_dir, "no local copy was found and download=False"))
        src = _download(data_dir)
    _extract(src, target, data_dir, expected, progress)
    listing = _scan(target)  # decoded while extracting: record it without decoding again
    _check_counts(listing.counts(), expected, lambda c: target / c, "EuroSAT")
    _write_marker(_marker_path(data_dir, target), listing,
                  _sha(listing.signature, json.dumps(expected, sort_keys=True)))
    return listing


def prepare_eurosat(data_dir="data", source=None, *, download=True, progress=True) -> Path:
    """Make EuroSAT RGB available and verified; return its ImageFolder root (`data_dir/eurosat/2750`).

    Sources, first found wins: `source` (a zip, or an extracted folder — the `2750` folder or one
    above it — which is then used in place), `$HW2_EUROSAT_ZIP`, `data_dir/EuroSAT.zip`,
    `../shared/data/EuroSAT.zip` (from the working directory, then beside the source checkout),
    then a download of the official archive (torchvision's URL, md5-checked) into `data_dir`.
    A zip is extracted only when `data_dir/eurosat/2750` does not exist yet, through a temporary
    folder renamed into place, so an interrupted extraction never looks complete.

    Verification: the 10 class folders with their exact counts (27,000 images), nothing else in
    them, and every image decodes as RGB. The full decode is remembered in a marker file under
    `data_dir/cache/` and redone only when the folder's listing changes, so a second call returns
    in well under a second. Problems raise `DataError` naming the file or folder.
    """
    return _prepare_eurosat(Path(data_dir), source, download, progress).root


# --------------------------------------------------------------------------- splits


def _split_sizes(n: int, fractions) -> list[int]:
    sizes = [int(math.floor(n * f + 0.5)) for f in fractions[:2]]
    sizes.append(n - sum(sizes))
    if sizes[2] < 0:
        sizes[1] += sizes[2]
        sizes[2] = 0
    for k in (1, 2):  # a class of 3+ images has at least one in each non-empty split
        if n >= 3 and fractions[k] > 0 and sizes[k] == 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[k] = 1
    return sizes


def _split_csv_text(listing: _Listing, seed: int, fractions) -> str:
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


def _parse_split(path: Path, text: str, listing: _Listing):
    """(paths, labels, splits) of a split file, or None when it lists other images than `listing`."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != SPLIT_HEADER:
        raise DataError(f"split file {path} does not start with the header {','.join(SPLIT_HEADER)}; "
                        "move it away to have a new one written")
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


def _split(data_dir: Path, name: str, listing: _Listing, seed: int, fractions):
    pct = "-".join(f"{100 * f:g}" for f in fractions)
    path = data_dir / "splits" / f"{name}-seed{seed}-{pct}.csv"
    if path.exists():
        text = path.read_text()
        parsed = _parse_split(path, text, listing)
        if parsed is not None:
            return path, text, parsed
        warnings.warn(f"split file {path} lists other images than {listing.root} holds now: "
                      "writing a new one", stacklevel=3)
    text = _split_csv_text(listing, seed, fractions)
    _atomic_write_bytes(path, text.encode())
    return path, text, _parse_split(path, text, listing)


# --------------------------------------------------------------------------- the cache


def _decode_resized(path: Path, size: int) -> torch.Tensor:
    """One image as uint8 3×size×size RGB: PIL decodes it and, when it has another size, resizes
    it (bilinear, antialiased) — exactly what textbook_loader's transforms do."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except Exception as exc:
        raise DataError(f"cannot decode image {path}: {exc}; replace it") from exc
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _build_cache(root: Path, paths: list[str], size: int, progress: bool) -> torch.Tensor:
    x = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def work(a, b):
        x[a:b] = torch.stack([_decode_resized(root / paths[i], size) for i in range(a, b)])

    _run_chunks(work, len(paths), progress=progress, desc=f"decoding images to {size}x{size}")
    return x


def _cached_images(data_dir: Path, name: str, listing: _Listing, split_text: str,
                   paths: list[str], size: int, progress: bool) -> tuple[torch.Tensor, Path]:
    key = _sha(_CACHE_VERSION, listing.signature, split_text, size)
    path = data_dir / "cache" / f"{name}-{size}px-{key[:16]}.pt"
    shape = (len(paths), 3, size, size)
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if blob.get("key") == key and tuple(blob["x"].shape) == shape:
                return blob["x"], path
        except Exception as exc:  # a damaged cache file is rebuilt, never trusted
            warnings.warn(f"rebuilding the unreadable cache {path} ({exc})", stacklevel=3)
    x = _build_cache(listing.root, paths, size, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"key": key, "x": x, "root": str(listing.root), "image_size": size}, tmp)
    os.replace(tmp, path)
    return x, path


# --------------------------------------------------------------------------- the dataset


@dataclass(repr=False)
class Dataset:
    """Every image of the dataset in split-file order: `x` uint8 N×3×S×S, `y` int64 N, `split`
    ("train"/"val"/"test" per image) and `paths` (relative to `root`, as in the split file)."""

    root: Path
    classes: list[str]
    split_csv: Path
    cache_path: Path
    x: torch.Tensor
    y: torch.Tensor
    split: np.ndarray
    paths: list[str]

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


def _check_fractions(fractions) -> tuple[float, float, float]:
    f = tuple(float(v) for v in fractions)
    if len(f) != 3 or min(f) < 0 or f[0] <= 0 or abs(sum(f) - 1) > 1e-6:
        raise ValueError(f"fractions must be three numbers (train, val, test) >= 0 with train > 0 "
                         f"that sum to 1, got {fractions}")
    return f


def load_dataset(data_dir="data", *, source=None, image_folder=None, image_size=64, split_seed=0,
                 fractions=(0.6, 0.2, 0.2), progress=True) -> Dataset:
    """EuroSAT (via `prepare_eurosat(data_dir, source)`) or any ImageFolder root (`image_folder`,
    verified without fixed counts; class names from its folders), split and cached.

    - Split: stratified and seeded (`split_seed`, `fractions` train/val/test), written once to
      `data_dir/splits/<name>-seed<seed>-<60-20-20>.csv` (`path,label,class,split`) and reused;
      the same seed writes the same bytes. A split file edited by hand is honoured (rows may be
      reordered or moved between splits); one that lists other images is rewritten (a warning).
    - Cache: every image decoded once (resized to `image_size` when it has another size) into a
      uint8 tensor in `data_dir/cache/`, keyed by the folder's listing, the split file's content and
      the size, written atomically and loaded memory-mapped.
    """
    data_dir = Path(data_dir)
    if image_folder is not None and source is not None:
        raise ValueError("give either source (EuroSAT) or image_folder (any ImageFolder), not both")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size!r}")
    image_size = int(image_size)
    fractions = _check_fractions(fractions)
    if image_folder is not None:
        listing = _verified(Path(image_folder), None, data_dir, progress)
        name = f"{_safe_name(listing.root.resolve().name)}-{_sha(listing.root.resolve())[:8]}"
    else:
        listing = _prepare_eurosat(data_dir, source, True, progress)
        name = "eurosat"
    split_csv, split_text, (paths, labels, splits) = _split(data_dir, name, listing, split_seed,
                                                            fractions)
    x, cache_path = _cached_images(data_dir, name, listing, split_text, paths, image_size,
                                   progress)
    return Dataset(root=listing.root, classes=list(listing.classes), split_csv=split_csv,
                   cache_path=cache_path, x=x, y=torch.tensor(labels, dtype=torch.int64),
                   split=np.array(splits), paths=paths)


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


# --------------------------------------------------------------------------- augmentation


def _check_preset(preset: str) -> None:
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {AUGMENT_PRESETS}")


def _crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int,
               vflip: bool) -> torch.Tensor:
    """Random crop of each sample from its zero-padded image plus a random horizontal (and
    optionally vertical) flip, as one gather; any dtype, any device."""
    b, c, h, w = x.shape
    gdev = generator.device
    offs = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=gdev)
    flips = torch.rand(2 if vflip else 1, b, generator=generator, device=gdev) < 0.5
    offs, flips = offs.to(x.device), flips.to(x.device)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    cols = offs[1, :, None] + torch.where(flips[0, :, None], w - 1 - ar_w, ar_w)
    rows = offs[0, :, None] + (torch.where(flips[1, :, None], h - 1 - ar_h, ar_h) if vflip
                               else ar_h)
    xp = F.pad(x, (padding, padding, padding, padding)) if padding else x
    wp = w + 2 * padding
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return xp.flatten(2).gather(2, index).view(b, c, h, w)


def _color_affine(x, generator, strength: float):
    """Per-sample colour jitter as one affine map of each pixel's colour: brightness (×fb), contrast
    (blend with the image's mean gray), saturation (blend with the pixel's gray), the factors
    uniform in [1 − strength, 1 + strength]. Returns (M B×3×3, t B×3) for `x`'s pixel scale
    (clip after applying). Only x's mean gray is read."""
    f = torch.rand(3, x.shape[0], generator=generator, device=generator.device)
    fb, fc, fs = (1 - strength + 2 * strength * f).to(x.device)
    gray = torch.tensor(_GRAY, device=x.device)
    return _color_matrix(fb, fc, fs, x.float().mean((2, 3)) @ gray)


def _color_matrix(fb, fc, fs, mean_gray):
    """torchvision's adjust_brightness → adjust_contrast → adjust_saturation with per-sample
    factors, composed without the clipping in between: y = M x + t."""
    b = fb.shape[0]
    gray = torch.tensor(_GRAY, device=fb.device)
    eye = torch.eye(3, device=fb.device)
    sat = fs.view(b, 1, 1) * eye + (1 - fs).view(b, 1, 1) * gray.view(1, 1, 3)
    # saturation maps a gray constant to itself (the luma weights sum to 1), hence t below
    return sat * (fc * fb).view(b, 1, 1), ((1 - fc) * fb * mean_gray).view(b, 1).expand(b, 3)


def _apply_affine(x, mat, shift):
    b, c, h, w = x.shape
    return torch.baddbmm(shift.unsqueeze(2), mat, x.reshape(b, c, h * w)).view(b, c, h, w)


def augment_batch(x, preset, generator, *, padding=4, vflip=False, jitter=0.4) -> torch.Tensor:
    """Augment a whole batch with per-sample random parameters from `generator` (a torch.Generator
    on any device; parameters are moved to x's device): `x` float B×3×H×W in [0, 1], any device.

    - "none": `x` itself (the identity).
    - "basic": random crop from the image zero-padded by `padding` + horizontal flip (and a
      vertical one if `vflip`).
    - "color": basic + colour jitter (brightness, contrast, saturation factors each uniform in
      [1 − jitter, 1 + jitter], applied in that order, clipped to [0, 1] at the end).
    """
    _check_preset(preset)
    if preset == "none":
        return x
    x = _crop_flip(x, generator, padding, vflip)
    if preset == "color":
        mat, shift = _color_affine(x, generator, jitter)
        x = _apply_affine(x, mat.to(x.dtype), shift.to(x.dtype)).clamp_(0, 1)
    return x


# --------------------------------------------------------------------------- the fast loader


class BatchLoader:
    """Batches from an in-memory uint8 tensor, augmented whole on the device.

    Iterating yields (xb float32 normalized B×3×H×W — or resize×resize — on `device`, yb int64 on
    `device`); len() is the number of batches per epoch. Shuffling (a new order every epoch),
    class-balanced sampling (`balanced`: each epoch draws `num_samples` indices with replacement,
    every class equally likely) and the augmentation's per-sample parameters all come from
    `self.generator` (CPU, seeded with `seed`), so a seed gives the same batches everywhere.
    On CUDA the whole tensor is moved to the device once. `x` may also be float in [0, 1].
    """

    def __init__(self, x, y, batch_size=128, *, shuffle=False, augment="none", device="cpu",
                 mean=EUROSAT_MEAN, std=EUROSAT_STD, resize=None, drop_last=False, seed=0,
                 balanced=False, vflip=False, padding=4, jitter=0.4):
        _check_preset(augment)
        if x.ndim != 4 or x.shape[0] != len(y):
            raise ValueError(f"x must be N×C×H×W with N = len(y); got {tuple(x.shape)} and {len(y)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(mean) != x.shape[1] or len(std) != x.shape[1]:
            raise ValueError(f"mean and std need one value per channel ({x.shape[1]})")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.balanced, self.vflip, self.padding, self.jitter = balanced, vflip, padding, jitter
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
        self._weights = None
        if balanced:
            counts = torch.bincount(self.targets).double()
            self._weights = (1.0 / counts)[self.targets]

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def _order(self) -> torch.Tensor:
        n = self.num_samples
        if self.balanced:
            return torch.multinomial(self._weights, n, replacement=True, generator=self.generator)
        if self.shuffle:
            return torch.randperm(n, generator=self.generator)
        return torch.arange(n)

    def _batch(self, idx: torch.Tensor) -> torch.Tensor:
        xb = self._x.index_select(0, idx)
        if xb.device != self.device:
            xb = xb.to(self.device, non_blocking=True)
        if self.augment != "none":
            xb = _crop_flip(xb, self.generator, self.padding, self.vflip)
        xf = xb.to(torch.float32)
        if self.augment == "color":
            # jitter and normalization folded into one per-sample affine map, then a per-channel clip
            mat, shift = _color_affine(xf, self.generator, self.jitter)  # on pixels in [0, 1]
            mean, std = self._mean_std
            s = self._pixel_scale
            mat_n = mat * (s / std).view(1, -1, 1)
            shift_n = (shift * s - mean) / std
            xf = _apply_affine(xf, mat_n, shift_n)
            lo, hi = (-mean / std).view(1, -1, 1, 1), ((1 - mean) / std).view(1, -1, 1, 1)
            xf = torch.minimum(xf, hi, out=xf)
            xf = torch.maximum(xf, lo, out=xf)
        else:
            xf = xf.mul_(self._scale).add_(self._shift)
        if self.resize is not None and tuple(xf.shape[-2:]) != (self.resize, self.resize):
            xf = F.interpolate(xf, size=(self.resize, self.resize), mode="bilinear",
                               align_corners=False)
        return xf

    def __iter__(self):
        order = self._order().to(self._x.device)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield self._batch(idx), self._y.index_select(0, idx).to(self.device)


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


def _textbook_transform(preset: str, image_size: int = 64, *, mean=EUROSAT_MEAN, std=EUROSAT_STD,
                        resize=None, padding=4, vflip=False, jitter=0.4):
    """The classic torchvision pipeline of a preset: augmentation on the PIL image, then to a
    normalized float tensor (the image is first resized to image_size if it has another size)."""
    from torchvision.transforms import v2

    _check_preset(preset)
    t = [v2.Resize((image_size, image_size))]  # a no-op at that size already
    if preset in ("basic", "color"):
        t += [v2.RandomCrop(image_size, padding=padding), v2.RandomHorizontalFlip()]
        if vflip:
            t.append(v2.RandomVerticalFlip())
    if preset == "color":
        t.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    t += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if resize is not None:
        t.append(v2.Resize((resize, resize), antialias=True))
    return v2.Compose(t)


def textbook_loader(ds: Dataset, split, *, batch_size=128, augment="none", num_workers=2,
                    shuffle=False, mean=EUROSAT_MEAN, std=EUROSAT_STD, resize=None, seed=0,
                    vflip=False):
    """The reference path: the split's JPEGs read from disk with PIL, torchvision.transforms.v2
    (same presets as `BatchLoader`), and a `torch.utils.data.DataLoader` with `num_workers`
    (persistent) worker processes. Batches are on the CPU. Its generator (seeded) drives the
    shuffling and the workers' random seeds."""
    rows = ds.indices(split)
    files = [str(ds.root / ds.paths[r]) for r in rows]
    targets = ds.y[torch.from_numpy(rows)].tolist()
    transform = _textbook_transform(augment, int(ds.x.shape[-1]), mean=mean, std=std,
                                   resize=resize, vflip=vflip)
    return torch.utils.data.DataLoader(
        _FileDataset(files, targets, transform), batch_size=batch_size, shuffle=shuffle,
        num_workers=num_workers, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(int(seed)))
