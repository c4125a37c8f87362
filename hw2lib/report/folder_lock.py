"""One report per folder at a time: a lock file naming the process that holds it.

`hw2 report` and `hw2 run` take `OUT/.hw2-lock` (the holder's PID, host and start time) before
they write anything there; a second process asking for the same folder is refused at once, with
the folder and the other PID named. A lock whose process is gone (killed, machine restarted) is
taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".hw2-lock"


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def acquire(folder) -> Path:
    """Take `folder`'s lock (the folder must exist) or raise FolderBusyError naming the holder."""
    path = Path(folder) / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            other = _holder(path)
            if other is None and time.time() - _mtime(path) < 5:
                time.sleep(0.2)  # being written right now
                continue
            same_host = other is not None and other.get("host") == me["host"]
            if other is not None and other["pid"] != me["pid"] and \
                    (not same_host or _alive(other["pid"])):
                raise FolderBusyError(
                    f"report folder {Path(folder)} is in use by another hw2 process (PID "
                    f"{other['pid']} on {other.get('host')}, since {other.get('since')}); wait "
                    f"for it to finish or choose another --out (its lock: {path})") from None
            with contextlib.suppress(FileNotFoundError):  # a dead process's lock: take it over
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        return path
    raise FolderBusyError(f"could not take the lock {path}; remove it if no hw2 process is "
                          "writing to that folder")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def release(path) -> None:
    """Give the lock back (only when this process holds it)."""
    path = Path(path)
    rec = _holder(path)
    if rec is not None and rec["pid"] == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def held(folder):
    """`acquire` … `release` around a block."""
    path = acquire(folder)
    try:
        yield path
    finally:
        release(path)
