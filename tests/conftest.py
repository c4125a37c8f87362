"""Shared fixtures: small synthetic ImageFolders of random JPEGs, and the real EuroSAT archive.

- `make_imagefolder(root, classes=..., per_class=..., size=...)`: write one (a function fixture).
- `synthetic_imagefolder`: session-wide, 10 classes (EuroSAT's names) × 12 JPEGs of 64×64, each
  class with its own mean colour so that a model can learn something from it.
- `small_folder`: a fresh 3-class × 4-image ImageFolder of 16×16 JPEGs per test;
  `small_ds`: per test module, 3 classes × 20 JPEGs of 32×32, split and cached at 32×32.
- `real_eurosat_zip`: ../shared/data/EuroSAT.zip (or $HW2_EUROSAT_ZIP); the test is skipped, with
  the reason, where it is absent. `real_eurosat`: (that dataset, its data_dir), extracted once a
  session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The suite trains in float32 on every CPU (its numbers must not depend on the machine's bf16
# support); tests/test_cpu_probe.py sets the measured choice (hw2lib.train.cpu_probe) on purpose.
os.environ.setdefault("HW2_CPU_PRECISION", "fp32")
EUROSAT_NAMES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
                 "Pasture", "PermanentCrop", "Residential", "River", "SeaLake")


def write_imagefolder(root, classes=("a", "b", "c"), per_class=20, size=32, *, seed=0,
                      ext=".jpg", counts=None) -> Path:
    """<root>/<Class>/<Class>_<i>.jpg (i from 1): noisy images around a per-class colour."""
    import numpy as np  # here, not at the top: the CUDA step of `hw2 doctor` needs only torch
    from PIL import Image  # and pytest to collect tests/test_cuda.py

    rng = np.random.default_rng(seed)
    root = Path(root)
    for k, c in enumerate(classes):
        folder = root / c
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(40, 216, size=3)
        n = per_class if counts is None else counts[k]
        for i in range(n):
            hw = size if isinstance(size, tuple) else (size, size)
            img = np.clip(base + rng.normal(0, 30, (*hw, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{c}_{i + 1}{ext}", quality=90)
    return root


@pytest.fixture(scope="session")
def make_imagefolder():
    """The `write_imagefolder` function, for tests that build (and break) their own folders."""
    return write_imagefolder


@pytest.fixture(scope="session")
def synthetic_imagefolder(tmp_path_factory) -> Path:
    """Root of a synthetic ImageFolder: 10 classes (EuroSAT's names) × 12 JPEGs of 64×64."""
    root = tmp_path_factory.mktemp("synthetic") / "images"
    return write_imagefolder(root, EUROSAT_NAMES, per_class=12, size=64, seed=1234)


@pytest.fixture
def small_folder(tmp_path) -> Path:
    return write_imagefolder(tmp_path / "images", ("a", "b", "c"), per_class=4, size=16)


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    """3 classes × 20 JPEGs of 32×32, split and cached at 32×32."""
    from hw2lib import data as D

    base = tmp_path_factory.mktemp("small-ds")
    root = write_imagefolder(base / "images", ("cat", "dog", "eel"), per_class=20, size=32)
    return D.load_dataset(base / "data", image_folder=root, image_size=32, progress=False)


def find_real_eurosat_zip() -> Path | None:
    env = os.environ.get("HW2_EUROSAT_ZIP")
    for p in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared" / "data" / "EuroSAT.zip"]:
        if p.is_file():
            return p.resolve()
    return None


@pytest.fixture(scope="session")
def real_eurosat_zip() -> Path:
    """The real EuroSAT archive; skips the test where it is absent."""
    p = find_real_eurosat_zip()
    if p is None:
        pytest.skip("real EuroSAT archive not found: ../shared/data/EuroSAT.zip is absent and "
                    "$HW2_EUROSAT_ZIP is not set")
    return p


@pytest.fixture(scope="session")
def real_eurosat(real_eurosat_zip, tmp_path_factory):
    """(the real EuroSAT dataset, its data_dir): extracted, verified, split and cached once for
    the whole session."""
    from hw2lib import data as D

    data_dir = tmp_path_factory.mktemp("eurosat-real") / "data"
    return D.load_dataset(data_dir, source=real_eurosat_zip, progress=False), data_dir


def _simulated_gpu_box() -> bool:
    return os.environ.get("HW2_SIMULATE_GPU_BOX", "").strip() == "1"


@pytest.fixture(autouse=True)
def gpu_box_defaults(request, monkeypatch):
    """`HW2_SIMULATE_GPU_BOX=1`: every test outside the `cuda` marker runs with a GPU box's
    defaults — "auto" (or no device) resolves to CUDA (`runtime.default_device`), where training
    runs in bf16 — while no CUDA device exists: a test that trains on the default device fails
    here, as it would train on the GPU in bf16 there. A test holds on a GPU box when it pins its
    device and precision, or asserts what holds on both (issue 28; `tests/test_gpu_box.py` runs
    the suite so)."""
    if _simulated_gpu_box() and request.node.get_closest_marker("cuda") is None:
        import torch

        from hw2lib.core import runtime

        monkeypatch.setattr(runtime, "default_device", lambda: torch.device("cuda"))
    yield
