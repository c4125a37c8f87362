"""What every notebook does around its story: one set-up call (run folder, seed, device, figures,
data), warnings a reader cannot miss, and the `results.json` the report's index reads."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from hw2lib.core import gpu_check, io, paths
from hw2lib.train.executor import check_executor, check_ray_address
from hw2lib.train.experiment import RANDOM_INIT_PREFIX


@dataclass
class Session:
    run_dir: Path
    device: object
    ds: object  # hw2lib.data.Dataset
    gpu_required: bool = False  # profile full on "auto": a Ray node without a GPU is an error


def setup(run_dir, *, seed: int, device="auto", figure_format: str = "png", data_dir=None,
          source=None, image_folder=None, image_size: int = 64, split_seed: int = 0,
          executor: str = "local", gpus_per_run: float = 1.0,
          ray_address: str | None = None, profile: str | None = None) -> Session:
    """The first cell of every notebook: run folder, one global seed, device, inline figures, and
    the dataset (EuroSAT from the first source found, or any ImageFolder root).

    Paths do not depend on the kernel's working directory: a relative `run_dir` lies under the
    project's reports/ (`$HW2_REPORTS_DIR`), `data_dir=None` is the project's data/
    (`$HW2_DATA_DIR`); see `hw2lib.core.paths`.
    `figure_format="jpeg"` suits notebooks of pictures (A-vis): a fraction of PNG's page size.
    With `executor="ray"` (B, C) the Ray settings are checked first, as `hw2 report` does, so a
    plain papermill or JupyterLab run stops in one line before any folder or data.
    Under `profile="full"` the device "auto" must be a GPU: no silent CPU run (`device="cpu"` or
    `$HW2_ALLOW_CPU=1` asks for the CPU on purpose)."""
    if figure_format not in ("png", "jpeg"):
        raise ValueError(f"figure_format must be 'png' or 'jpeg', got {figure_format!r}")
    check_executor(executor, gpus_per_run)
    if executor == "ray":
        check_ray_address(ray_address)
    import matplotlib.pyplot as plt
    import pandas as pd

    from hw2lib import data as D
    from hw2lib.core.runtime import resolve_device, run_info, seed_everything

    auto = device is None or str(device).lower() == "auto"
    dev = resolve_device(device)
    if profile == "full" and auto and dev.type != "cuda":
        why = gpu_check.check() or "torch sees no CUDA device on this machine"
        if not gpu_check.cpu_allowed():
            raise RuntimeError(f"profile 'full' needs a usable GPU and device='auto' found "
                               f"none: {why}. Use the profile 'quick' on the CPU, or set "
                               "device='cpu' (or $HW2_ALLOW_CPU=1) to run full on the CPU on "
                               "purpose.")
    run_dir = paths.report_path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "figure.max_open_warning": 0})
    pd.set_option("display.max_columns", 40)  # the plan table's recipe columns, none elided
    # The notebooks show the random-init warning as a box (show_warning); not twice on stderr.
    warnings.filterwarnings("ignore", message=RANDOM_INIT_PREFIX, category=UserWarning)
    from IPython import get_ipython

    if get_ipython() is not None:  # in a kernel (papermill, JupyterLab): inline figure format
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats(figure_format)
    print("  ".join(f"{k}={v}" for k, v in run_info(dev).items()))
    ds = D.load_dataset(paths.data_dir(data_dir), source=source, image_folder=image_folder, image_size=image_size,
                        split_seed=split_seed, progress=False)
    return Session(run_dir, dev, ds,
                   gpu_required=profile == "full" and auto and not gpu_check.cpu_allowed())


def show_warning(msg: str) -> None:
    """A warning a reader cannot miss, in the notebook and its HTML page."""
    import html

    from IPython.display import HTML, display

    display(HTML("<div style='background:#fff4e5;border-left:6px solid #f0a000;padding:.7em 1em;"
                 f"font-size:1.05em'><b>⚠ Warning.</b> {html.escape(msg)}</div>"))


def escape_markdown(text: str) -> str:
    """`text` (which may hold class names, file names or parameters) as Markdown that shows it
    literally: HTML escaped (no tag of a folder's name is live on the page) and Markdown's own
    markup characters backslashed. Quotes stay as they are: `&#x27;` would have its `#`
    backslashed and show as text ("the report&#x27;s")."""
    import html
    import re

    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", html.escape(str(text), quote=False))


def show_findings(lines: list[str], *, heading: str | None = None) -> None:
    """Computed findings as a bulleted Markdown list (each line shown as text, escaped)."""
    from IPython.display import Markdown, display

    text = "\n".join(f"- {escape_markdown(line)}" for line in lines) \
        or "- (no comparison could be computed)"
    display(Markdown((f"**{escape_markdown(heading)}**\n\n" if heading else "") + text))


def show_families(families, notes=()) -> None:
    """Each family of comparisons (`stats.Family`) as a headed list — its name, its size k and
    that Holm-adjusted p decides the words — then any notes."""
    for fam in families:
        show_findings(fam.lines(), heading=fam.heading())
    if notes:
        show_findings(list(notes))


def headline(name: str, value: float | None, reference: float | None = None, note: str = "",
             run_id: str | None = None) -> dict:
    """One row of the index's comparison table, with the run identity it came from."""
    return {"name": name, "value": None if value is None else float(value),
            "reference": reference, "note": note, "run_id": run_id}


def write_results(run_dir, *, headline_rows, metrics=None, warnings_=(), device=None,
                  findings=(), **extra) -> None:
    """`results.json` of a notebook: what the index and `hw2 compare` read (headline, every
    finding of its families with its test and word, warnings, environment). Says where it went
    and returns nothing (a notebook's last cell would echo a PosixPath)."""
    from hw2lib.core.runtime import run_info

    path = Path(run_dir) / "results.json"
    found = [r for fam in findings for r in fam.results()]
    io.write_json(path, {"headline": list(headline_rows), "findings": found,
                         "metrics": metrics or {}, "warnings": list(warnings_),
                         "environment": run_info(device), **extra})
    print(f"results written to {path}")


def count_table(ds, idx: dict):
    """Images per class in each split used: a DataFrame (classes × splits, and a total row)."""
    import numpy as np
    import pandas as pd

    table = pd.DataFrame({s: np.bincount(ds.y[rows].numpy(), minlength=ds.num_classes)
                          for s, rows in idx.items()}, index=ds.classes)
    table.loc["total"] = table.sum()
    return table


def show_failures(failed: list[dict]) -> list[str]:
    """A warning box per failed run (which run, which error); returns the messages, for
    `write_results(warnings_=...)` so that the index says which runs failed."""
    msgs = [f"Run {f['config']['name']} (seed {f['config']['seed']}) FAILED and is left out of "
            f"every table and finding below: {f['error']}" for f in failed]
    for m in msgs:
        show_warning(m)
    return msgs


def show_run_warnings(failed: list[dict], results) -> list[str]:
    """`show_failures`, then a box per distinct warning of the finished runs (random init);
    returns all the messages, for `write_results(warnings_=...)`."""
    msgs = show_failures(failed)
    for w in dict.fromkeys(r["warning"] for r in results if r.get("warning")):
        show_warning(w)
        msgs.append(w)
    return msgs


def show_note(text: str) -> None:
    """A short italic note (nothing when `text` is empty)."""
    if text:
        from IPython.display import Markdown, display

        display(Markdown(f"*{escape_markdown(text)}*"))


def show(fig, note: str = ""):
    """Show `note` (if any) and return `fig` for the cell to display (None shows nothing). `fig`
    may be a (figure, note) pair, as `task_b.curves` returns."""
    if isinstance(fig, tuple):
        fig, note = fig
    show_note(note)
    return fig


def report_path(value) -> Path:
    """An input under the reports (A-vis's `train_results`): absolute as given, relative under
    the project's reports/ (see `hw2lib.core.paths`)."""
    return paths.report_path(value)
