"""The files of a training run in its folder: `best.pt` and `last.pt` (below), `run.json`,
`history.jsonl`, and how they are written — by time, as plain CPU tensors, atomically.

`CheckpointWriter` writes a run's checkpoints at most once every `every` seconds (and always for
the first and the last epoch of a `fit` call, and on an interruption): a 100+ MB `last.pt` each
epoch would cost a large share of a short epoch on a GPU. An epoch not written at once is kept in
memory (a copy of its tensors on their device) until the next write or an interruption, when it
is written: whatever epoch `last.pt` holds, resuming from it is exact, since it holds that epoch's
whole state. Every tensor is saved on the CPU, so `torch.load(path, weights_only=True)` works on
any machine, a CPU-only one included, whatever device wrote it.

Checkpoints are plain dicts of CPU tensors and built-in types, loadable on any machine with
`torch.load(path, weights_only=True)` (`hw2lib.train.engine.fit` decides what goes in them):

- ``last.pt`` — everything needed to resume: model, optimizer and scheduler state, epoch, best
  validation accuracy, history, config, and the RNG states (torch CPU/CUDA, Python, NumPy and the
  train loader's `generator`). Written by time — at most once every `checkpoint_every` seconds,
  and always after the first and the last epoch of a `fit` call and when training stops on an
  error or Ctrl-C; an epoch not yet written waits in memory. Resuming from it is exact.
- ``best.pt`` — the weights of the epoch with the best validation accuracy (the last epoch when
  there is no validation loader), with epoch, config and history; no optimizer state (it is for
  evaluation, and halves the disk a study of many runs needs).

Both are written atomically (`hw2lib.core.io.atomic_write`) and only for an epoch whose losses, weights,
BatchNorm statistics and optimizer state are all finite: a diverged epoch raises
`TrainingDiverged` and is never saved.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from hw2lib.core import io
from hw2lib.core.io import CorruptFileError

LAST, BEST, HISTORY = "last.pt", "best.pt", "history.jsonl"
CHECKPOINT_EVERY_S = 60.0  # fit's default: at most one checkpoint write a minute


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def to_cpu(obj):
    """`obj` (dicts, lists, tuples of tensors and built-in values) with every tensor on the CPU
    (CPU tensors themselves, not copies)."""
    return _map_tensors(obj, lambda t: t.detach().cpu())


def snapshot(obj):
    """A copy of `obj` that later training steps cannot change: tensors cloned on their device
    (no host sync), containers copied."""
    return _map_tensors(obj, lambda t: t.detach().clone())


def save(obj, path: Path) -> None:
    """torch.save of `obj` with its tensors on the CPU, written atomically."""
    io.atomic_write(path, lambda tmp: torch.save(to_cpu(obj), tmp))


class CheckpointWriter:
    """best.pt and last.pt of one `fit` call in `out`, written at most every `every` seconds.

    `epoch(last, best, force=..., others=...)` takes a completed (finite) epoch's last.pt
    content, best.pt's when that epoch is the best so far, and any other file of the epoch
    (`others`: name → content, e.g. `best_raw.pt`). It writes them (last.pt last: it is the
    commit point) when `force`, at its first epoch, or when `every` seconds have passed since its
    last write; otherwise it keeps a snapshot of them for `flush`, which writes what is pending
    (call it when training stops for any reason). `every=0` writes every epoch."""

    def __init__(self, out: Path, every: float = CHECKPOINT_EVERY_S, clock=time.monotonic):
        if not float(every) >= 0:
            raise ValueError(f"checkpoint_every must be >= 0 seconds, got {every!r}")
        self.out, self.every, self.clock = Path(out), float(every), clock
        self.last_write: float | None = None
        self.pending: tuple[dict[str, dict], dict] | None = None  # (other files, last.pt)
        self.writes = 0  # how many times last.pt was written (for tests and logs)

    def epoch(self, last: dict, best: dict | None = None, *, force: bool = False,
              others: dict[str, dict] | None = None) -> bool:
        """Write now or keep for later (see the class); True when written now."""
        files = {BEST: best} if best is not None else {}
        files.update(others or {})
        earlier = self.pending[0] if self.pending is not None else {}
        due = self.last_write is None or self.clock() - self.last_write >= self.every
        if force or due:
            self._write({**earlier, **files}, last)
            return True
        self.pending = ({**earlier, **{k: snapshot(v) for k, v in files.items()}},
                        snapshot(last))
        return False

    def flush(self) -> bool:
        """Write the pending epoch, if any; True when something was written."""
        if self.pending is None:
            return False
        self._write(*self.pending)
        return True

    def _write(self, files: dict[str, dict], last: dict) -> None:
        for name, obj in files.items():  # best.pt (and the like) before last.pt
            save(obj, self.out / name)
        save(last, self.out / LAST)
        self.pending, self.last_write = None, self.clock()
        self.writes += 1


def load_checkpoint(path, model: nn.Module | None = None, map_location="cpu") -> dict:
    """Load a checkpoint written by `fit` with `weights_only=True`; load its weights into `model`
    when given. Returns the checkpoint dict. A truncated or empty file (a killed copy, a full
    disk) raises `hw2lib.core.io.CorruptFileError` naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found (fit(out_dir=...) writes best.pt "
                                "and last.pt there)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (EOFError, RuntimeError, OSError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        if isinstance(exc, PermissionError) or "Weights only load failed" in str(exc):
            raise  # readable but not allowed: not a corrupt file
        size = path.stat().st_size
        why = "empty (0 bytes)" if size == 0 else f"truncated or damaged ({size:,} bytes)"
        raise CorruptFileError(
            f"checkpoint {path} is {why} and cannot be loaded ({type(exc).__name__}: "
            f"{str(exc)[:120] or 'no details'}). Delete it to start this run over (fit writes it "
            "again), or copy it anew if it came from elsewhere.") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CorruptFileError(f"{path} is not a checkpoint written by hw2lib.train.engine.fit (no "
                               "'model' state dict in it); pass a best.pt or last.pt")
    if model is not None:
        target = getattr(model, "_orig_mod", model)  # a torch.compile'd model
        target.load_state_dict(ckpt["model"])
    return ckpt


def read_history(path_or_dir) -> list[dict]:
    """The per-epoch records of `history.jsonl` (a file, or a run folder holding one)."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / HISTORY
    if not path.exists():
        raise FileNotFoundError(f"history {path} not found (fit(out_dir=...) writes it)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def history_text(history: Iterable[dict]) -> str:
    return "".join(json.dumps(rec) + "\n" for rec in history)


def check_same_training(ckpt: dict, stored: dict, path: Path) -> None:
    """A last.pt continues only the training that wrote it: the same recipe (but for `epochs`,
    which may grow) and step cap. (A run folder is named by its identity's hash, so this guards
    `fit(out_dir=...)` called by hand on a folder of another training.)"""
    from hw2lib.train.recipes import comparable

    def settings(rec: dict) -> dict:
        return {**{f"recipe.{k}": v for k, v in comparable(rec.get("config") or {}).items()
                   if k != "epochs"}, "max_steps": rec.get("max_steps")}

    old, new = settings(ckpt), settings(stored)
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        raise ValueError(f"cannot resume from {path}: it was written by another training "
                         f"({', '.join(diff)} differ). Use another out_dir for this recipe, or "
                         "delete the folder to start over there.")


def last_good(out: Path, epoch: int) -> str:
    """What a diverged run leaves to fall back on: the previous epoch's last.pt when it is there
    and finite, else none."""
    path = out / LAST
    if epoch == 1:
        return "none (it diverged in the first epoch)"
    if not path.exists():
        return f"none ({path} is missing)"
    try:
        ckpt = load_checkpoint(path)
    except CorruptFileError:
        return f"none ({path} is corrupt)"
    if int(ckpt["epoch"]) == epoch - 1 and all(
            torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point()):
        return f"{path} (epoch {epoch - 1}) is kept"
    return f"none ({path} is not a finite checkpoint of epoch {epoch - 1})"


def write_run_json(out: Path, info: dict, *, resumed_from: int = 0) -> None:
    """`out/run.json`: `info` (seed, versions, device, recipe, step cap) with the time the
    run started; a resumed run (`resumed_from` epochs done) keeps the first start and appends
    the resume (epoch, time, device) to `resumes`."""
    path = Path(out) / "run.json"
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    info = {**info, "started": now}
    if resumed_from and path.exists():
        try:
            prev = io.read_json(path, what="run record")
        except CorruptFileError:
            prev = {}  # rewritten below; the checkpoints hold the run's settings too
        info["started"] = prev.get("started", now)
        info["resumes"] = [*prev.get("resumes", []),
                           {"epoch": resumed_from, "at": now, "device": info["device"],
                            "device_name": info["device_name"]}]
    io.write_json(path, info)
