"""File helpers every module uses: one atomic write, one JSON encoder, checked JSON reads, hashes.

An atomic write goes to a unique temp file beside the target (`.<name>.tmp-<random>`) and is renamed
over it, so a reader sees the old file or the new one, never half of one; two processes writing
the same file cannot share a temp name. A write killed half-way leaves its temp file behind:
`remove_stale_temps` clears those.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

TEMP_MARK = ".tmp-"


class CorruptFileError(RuntimeError):
    """A file the project wrote cannot be read back (truncated, zero bytes, not JSON, ...)."""


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call `write(temp_path)` and rename the temp file over `path`; the temp file never survives
    an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a file follows the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask (read by setting it and putting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temps(folder, *, older_than: float = 0.0) -> list[Path]:
    """Delete the temp files that killed atomic writes left in `folder` (those not modified for
    `older_than` seconds, so that another process's write in progress is left alone); return
    what went."""
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    gone = []
    for p in folder.iterdir():
        if p.name.startswith(".") and TEMP_MARK in p.name and p.is_file():
            try:
                if now - p.stat().st_mtime >= older_than:
                    gone.append(p)
            except FileNotFoundError:  # its writer finished meanwhile
                continue
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def _default(o):
    """The one JSON encoder: numpy and torch scalars/arrays, paths, devices, sets, mappings that
    are not dicts (a `recipes.Recipe`)."""
    import numpy as np

    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set | frozenset):
        return sorted(o)
    mod = type(o).__module__
    if mod.startswith("torch"):
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)  # torch.device, torch.dtype
    raise TypeError(f"value {o!r} of type {type(o).__name__} cannot be recorded as JSON; "
                    "pass built-in types (numbers, strings, lists, dicts)")


def _nan_to_none(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    return o


def to_builtin(obj):
    """`obj` as built-in JSON types (numpy, torch, paths converted); NaN/inf become None."""
    return _nan_to_none(json.loads(json.dumps(obj, default=_default)))


def dumps(obj, *, indent: int | None = 2) -> str:
    """Strict JSON text of `obj` (NaN/inf written as null)."""
    return json.dumps(to_builtin(obj), indent=indent, allow_nan=False)


def canonical(obj) -> str:
    """One text per value: sorted keys, no spaces — what identity hashes are taken of."""
    return json.dumps(to_builtin(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def write_json(path, obj) -> Path:
    """Atomic, strict JSON write."""
    return atomic_write_text(path, dumps(obj) + "\n")


def read_json(path, *, what: str = "file") -> dict | list:
    """Read a JSON file the project wrote; a corrupt one raises `CorruptFileError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{what} {path} is corrupt ({exc}); delete it to rebuild it") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode())


def sha256_file(path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
