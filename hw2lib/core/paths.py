"""Where files go: the project's data and report folders, the same from any working directory.

The project is the folder above `hw2lib/` when it holds `notebooks/` (a source checkout, the usual
case with `pip install -e`), else the working directory. `$HW2_DATA_DIR` and `$HW2_REPORTS_DIR`
move the data and the reports on purpose. `hw2 data`, `hw2 run` / `report` and a notebook run by
papermill or JupyterLab from anywhere all read and write the same folders.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA = "HW2_DATA_DIR"
ENV_REPORTS = "HW2_REPORTS_DIR"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding hw2lib/


def project_root() -> Path:
    """The source checkout holding hw2lib/ and notebooks/ (else the working directory)."""
    if (SOURCE_ROOT / "notebooks").is_dir():
        return SOURCE_ROOT
    return Path.cwd()


def _from_env(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().absolute() if value else default


def data_root() -> Path:
    """`$HW2_DATA_DIR`, else the project's `data/`: extracted data, split files, caches."""
    return _from_env(ENV_DATA, project_root() / "data")


def reports_root() -> Path:
    """`$HW2_REPORTS_DIR`, else the project's `reports/`: report folders and their runs."""
    return _from_env(ENV_REPORTS, project_root() / "reports")


def data_dir(value=None) -> Path:
    """A notebook's or `hw2 data`'s data folder: `value` when given (relative: from the working
    directory), else `data_root()`."""
    return data_root() if value is None else Path(value).expanduser().absolute()


def report_path(value) -> Path:
    """A path under the reports: absolute as given, relative under `reports_root()` (a notebook's
    `run_dir = "interactive/runs/A-train"` default, A-vis's `train_results`)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else reports_root() / p
