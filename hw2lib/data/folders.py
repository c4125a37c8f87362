"""Checking an ImageFolder root (<root>/<Class>/<image>): its listing, its class counts, and that
every image decodes. A marker file remembers a full decode until the listing changes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hw2lib.core.io import write_json
from hw2lib.data.common import (
    IMAGE_EXTENSIONS,
    DataError,
    run_chunks,
    safe_name,
    sha_of,
    why_missing,
)

_RGB_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr"}


@dataclass
class Listing:
    """What an ImageFolder root holds: class folders (sorted) and their image files (sorted)."""

    root: Path
    classes: list[str]
    files: list[list[str]]
    signature: str  # hash of every relative path, size, mtime, ctime and inode

    def counts(self) -> dict[str, int]:
        return {c: len(f) for c, f in zip(self.classes, self.files, strict=True)}

    def paths(self) -> list[str]:
        return [f"{c}/{n}" for c, names in zip(self.classes, self.files, strict=True)
                for n in names]


def _entries(folder: Path) -> list[os.DirEntry]:
    """The visible entries of `folder` (names not starting with "."), sorted by name; a broken
    symbolic link or an unreadable folder is a DataError naming it."""
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list the folder {folder} ({exc.strerror or exc}): make it "
                        "readable") from exc
    for e in entries:
        if e.is_symlink() and not os.path.exists(e.path):
            raise DataError(f"{folder / e.name} {why_missing(e.path)}: point it at an existing "
                            "file or move it out of the image folder (nothing is deleted)")
    return entries


def scan(root: Path) -> Listing:
    """List an ImageFolder root; structural problems (no class folder, an empty class folder, a
    file that does not belong, a broken symbolic link) are errors naming the file or folder.
    Hidden files are ignored."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else why_missing(root)
        raise DataError(f"image folder {root} {what}: give the folder that holds one sub-folder of "
                        "images per class (<root>/<Class>/*.jpg)")
    h = hashlib.sha256()
    classes: list[str] = []
    for e in _entries(root):
        if not e.is_dir():
            raise DataError(f"unexpected file {root / e.name}: the root of an image folder holds "
                            "only class folders; move the file elsewhere (nothing is deleted)")
        classes.append(e.name)
    if not classes:
        raise DataError(f"image folder {root} has no class folders: expected <root>/<Class>/*.jpg")
    files: list[list[str]] = []
    for c in classes:
        names = []
        for e in _entries(root / c):
            if e.is_dir():
                raise DataError(f"unexpected folder {root / c / e.name}: a class folder holds "
                                "only images; move it elsewhere (nothing is deleted)")
            if not e.name.lower().endswith(IMAGE_EXTENSIONS):
                raise DataError(f"unexpected file {root / c / e.name}: not an image "
                                f"({', '.join(IMAGE_EXTENSIONS)}); move it out of the class "
                                "folder (nothing is deleted)")
            try:
                st = e.stat()
            except OSError as exc:
                raise DataError(f"cannot read {root / c / e.name} ({exc.strerror or exc}): make it "
                                "readable or move it out of the class folder") from exc
            # ctime and inode too: a file replaced or rewritten keeping its size and mtime (which
            # utime can set back) still changes them, so the listing covers the content
            h.update(f"{c}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t"
                     f"{st.st_ino}\n".encode())
            names.append(e.name)
        if not names:
            raise DataError(f"empty class folder {root / c}: every class needs at least one image; "
                            "add its images or remove the folder")
        files.append(names)
    return Listing(root, classes, files, h.hexdigest())


def require_expected_counts(counts: dict[str, int], expected: dict[str, int], where,
                            what: str) -> None:
    """Raise a DataError unless `counts` has exactly the classes of `expected` with exactly its
    numbers of images; `where(c)` names class c's folder in the message, `what` the dataset."""
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
            raise DataError(f"class folder {where(c)} holds {counts[c]} images, {what} has {n}: "
                            "the copy is incomplete or altered; use a complete archive")


def check_image(src, name) -> None:
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


def _decode_all(listing: Listing, progress: bool) -> None:
    paths = [listing.root / p for p in listing.paths()]

    def work(a, b):
        for p in paths[a:b]:
            check_image(p, p)

    run_chunks(work, len(paths), progress=progress, desc="verifying images")


def verify_imagefolder(root, expected_counts=None, *, check_decode=True,
                       progress=False) -> dict[str, int]:
    """Check an ImageFolder root (<root>/<Class>/<image>) and return {class: number of images}.

    Errors (`DataError`) name the file or folder: a missing root, no class folder, an empty or
    (with `expected_counts`) missing class folder, a wrong count, a file that is not an image or
    sits at the root, a sub-folder in a class folder, a broken symbolic link, and — with
    `check_decode` — an image that does not decode completely (truncated or damaged) as an
    RGB-convertible picture. Hidden files (names starting with ".") are ignored. Nothing is
    changed or deleted.
    """
    listing = scan(Path(root))
    if expected_counts is not None:
        require_expected_counts(listing.counts(), dict(expected_counts),
                                lambda c: listing.root / c, f"the dataset in {listing.root}")
    if check_decode:
        _decode_all(listing, progress)
    return listing.counts()


def _marker_path(data_dir: Path, root: Path) -> Path:
    root = Path(root).resolve()
    return data_dir / "cache" / f"verified-{safe_name(root.name)}-{sha_of(root)[:12]}.json"


def _signature(listing: Listing, expected) -> str:
    return sha_of(listing.signature, json.dumps(expected, sort_keys=True))


def verified(root: Path, expected, data_dir: Path, progress: bool) -> Listing:
    """`verify_imagefolder` with a marker file under data_dir/cache: the full decode runs again
    only when the folder's listing (names, sizes, modification times) has changed."""
    listing = scan(root)
    if expected is not None:
        require_expected_counts(listing.counts(), expected, lambda c: listing.root / c,
                                f"EuroSAT ({sum(expected.values()):,} images)")
    marker = _marker_path(data_dir, listing.root)
    try:
        if json.loads(marker.read_text()).get("signature") == _signature(listing, expected):
            return listing
    except (OSError, ValueError, AttributeError):  # absent, unreadable or not a JSON object
        pass
    _decode_all(listing, progress)
    record_verified(data_dir, listing, expected)
    return listing


def record_verified(data_dir: Path, listing: Listing, expected) -> None:
    """Write the marker that says `listing` (checked against `expected`) decoded completely."""
    write_json(_marker_path(data_dir, listing.root), {
        "root": str(listing.root.resolve()), "signature": _signature(listing, expected),
        "counts": listing.counts(), "images": sum(len(f) for f in listing.files),
        "verified": time.strftime("%Y-%m-%dT%H:%M:%S")})
