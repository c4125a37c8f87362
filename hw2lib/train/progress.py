"""Progress output of `fit`: a tqdm bar per epoch on a terminal, else one line per epoch."""

from __future__ import annotations

import sys
from contextlib import contextmanager

# the bar is for a terminal (stderr): tqdm.auto would warn in every kernel without ipywidgets
from tqdm import tqdm

PROGRESS_MODES = ("auto", "bar", "line")


def progress_mode(progress) -> str | None:
    """`progress` ("auto", "bar", "line", True or False/None) as "bar", "line" or None (silent):
    "auto" is a bar when stderr is a terminal, else lines (papermill, notebooks, logs)."""
    if progress is False or progress is None:
        return None
    if progress is True:
        progress = "auto"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES} or True/False, "
                         f"got {progress!r}")
    if progress == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return "bar" if isatty is not None and isatty() else "line"
    return progress


def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def format_epoch(rec: dict, epochs: int) -> str:
    """One concise line per epoch, e.g.
    ``epoch 3/10  lr 0.1  train 0.812/71.2%  val 0.701/75.3% (bal 74.9%)  12.3s  1,234 img/s``."""
    s = (f"epoch {rec['epoch']}/{epochs}  lr {rec['lr']:.4g}  "
         f"train {rec['train_loss']:.3f}/{_fmt_pct(rec['train_acc'])}")
    if rec.get("val_acc") is not None:
        s += (f"  val {rec['val_loss']:.3f}/{_fmt_pct(rec['val_acc'])} "
              f"(bal {_fmt_pct(rec['val_bal_acc'])})")
    return s + f"  {rec['seconds']:.1f}s  {rec['images_per_s']:,.0f} img/s"


@contextmanager
def epoch_bar(mode: str | None, total: int | None, epoch: int, epochs: int):
    """A tqdm bar on stderr for the epoch in "bar" mode (closed however the epoch ends), else
    None."""
    if mode != "bar":
        yield None
        return
    bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", leave=True, file=sys.stderr,
               dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def log_epoch(rec: dict, epochs: int, mode: str | None, bar) -> None:
    """The epoch's line: on the bar's postfix in "bar" mode, printed in "line" mode."""
    line = format_epoch(rec, epochs)
    if bar is not None:
        bar.set_postfix_str(line.split("  ", 1)[1], refresh=True)
    elif mode == "line":
        print(line, flush=True)
