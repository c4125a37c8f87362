"""hw2lib.data (the package): its public API and constants, nothing at import time, no cycles.

The modules' own tests: test_data_sources (folders, sources), test_data_splits, test_data_cache,
test_data_loaders (augment, loaders), test_data_cli (`hw2 data` on bad input).
"""

from __future__ import annotations

import os
from pathlib import Path

from hw2lib import data as D

# --------------------------------------------------------------------------- constants


def test_public_api_is_complete_and_shared_constants_are_the_same_objects():
    from hw2lib.core import constants

    used = ["load_dataset", "long_tail_indices", "BatchLoader", "DataError", "EUROSAT_MEAN",
            "EUROSAT_STD", "textbook_loader", "prepare_eurosat",
            "verify_imagefolder", "AUGMENT_PRESETS", "Dataset", "SPLITS", "ENV_ZIP",
            "subsample_per_class", "split_indices"]
    assert set(used) <= set(D.__all__)
    assert D.EUROSAT_MEAN is constants.EUROSAT_MEAN and D.EUROSAT_STD is constants.EUROSAT_STD
    assert D.SPLITS is constants.SPLITS and D.AUGMENT_PRESETS is constants.AUGMENT_PRESETS
    assert not hasattr(D, "IMAGENET_MEAN")  # the pretrained models' business (hw2lib.core.constants)


def test_nothing_at_import_time():
    import subprocess
    import sys

    code = ("import sys, hw2lib.data; "
            "assert 'torchvision' not in sys.modules and 'PIL' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('torchvision', 'PIL')))")
    env = dict(os.environ, PYTHONPATH=str(Path(D.__file__).resolve().parents[2]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_data_imports_no_training_or_report_module():
    """The data layer sits on the core layer alone: no import of nets, train, study or report
    (the core's `runtime` gives it its one pinned, non-blocking copy to the device)."""
    import subprocess
    import sys

    code = ("import sys, hw2lib.data; "
            "bad = sorted(m for m in sys.modules if m.startswith('hw2lib.') and m.split('.')[1] "
            "not in ('data', 'core')); assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=str(Path(D.__file__).resolve().parents[2]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
