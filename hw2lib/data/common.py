"""What every module of the data layer shares: its error and warning, hashes of parts, safe file
names, and a small thread pool that decodes images in chunks."""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataError(RuntimeError):
    """The data is missing or not what it should be; the message names the file and the fix."""


class DataArgumentError(DataError, ValueError):
    """A data function was called with an argument it cannot use (also a ValueError)."""


class DataWarning(UserWarning):
    """The data was used, but changed or incomplete in a way the user should know about."""


def sha_of(*parts) -> str:
    """sha256 of the parts (bytes, or anything `str` turns into text), each one delimited."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def safe_name(name: str) -> str:
    """`name` reduced to letters, digits, "_", "." and "-", for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "images"


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def run_chunks(fn, n: int, *, progress: bool, desc: str, chunk: int = 256) -> None:
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


def why_missing(path) -> str:
    """Why `path` cannot be read, as the end of a sentence: a broken symbolic link says where it
    points (its target does not exist, or the links form a loop)."""
    if os.path.islink(path):
        return f"is a broken symbolic link (it points to {os.readlink(path)}, which does not exist)"
    return "does not exist"
