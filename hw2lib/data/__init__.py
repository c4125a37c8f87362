"""The data layer: EuroSAT RGB (or any ImageFolder) from archive to augmented batches.

    archive / folder ──verify──► data/eurosat/2750/<Class>/*.jpg
        ──► data/splits/*.csv (seeded, stratified 60/20/20)
        ──► data/cache/*.pt (every image decoded once: uint8 N×3×S×S)
        ──► BatchLoader (whole-batch augmentation with torch ops on the training device)
            or textbook_loader (the torchvision reference)

It may use `hw2lib.core` only (constants, io, the device path of `runtime`); it knows nothing of
models or training. One module per step:

- `folders`: check an ImageFolder root (`verify_imagefolder`), remembered by a marker file.
- `sources`: find EuroSAT (argument, $HW2_EUROSAT_ZIP, data/EuroSAT.zip, ../shared/data/EuroSAT.zip,
  download), extract it through a temporary folder and verify it (`prepare_eurosat`).
- `splits`: the stratified split file, per-class subsets (`subsample_per_class`, `split_indices`)
  and the long-tailed training subset (`long_tail_indices`).
- `cache`: every image decoded once into a uint8 tensor; `load_dataset` returns a `Dataset`.
- `augment`: whole-batch augmentation with torch ops (the draws and maps `BatchLoader` fuses).
- `loaders`: `BatchLoader`, the fast path; `textbook_loader`, the torchvision one.

Nothing here runs at import time. Generated files are written atomically (temp file + rename); no
file of the user's is ever deleted or changed. Problems with the data raise `DataError` with a
message that names the file and the fix; conversions and gaps the data survives are `DataWarning`s.
"""

from hw2lib.core.constants import EUROSAT_MEAN, EUROSAT_STD, SPLITS
from hw2lib.data.augment import AUGMENT_PRESETS
from hw2lib.data.cache import Dataset, load_dataset
from hw2lib.data.common import IMAGE_EXTENSIONS, DataArgumentError, DataError, DataWarning
from hw2lib.data.folders import verify_imagefolder
from hw2lib.data.loaders import BatchLoader, textbook_loader
from hw2lib.data.sources import (
    ENV_ZIP,
    EUROSAT_CLASSES,
    EUROSAT_COUNTS,
    EUROSAT_MD5,
    EUROSAT_URL,
    prepare_eurosat,
)
from hw2lib.data.splits import SPLIT_HEADER, long_tail_indices, split_indices, subsample_per_class

__all__ = [
    "AUGMENT_PRESETS", "ENV_ZIP", "EUROSAT_CLASSES", "EUROSAT_COUNTS", "EUROSAT_MD5",
    "EUROSAT_MEAN", "EUROSAT_STD", "EUROSAT_URL", "IMAGE_EXTENSIONS", "SPLITS", "SPLIT_HEADER",
    "BatchLoader", "DataArgumentError", "DataError", "DataWarning", "Dataset",
    "load_dataset", "long_tail_indices", "prepare_eurosat", "split_indices", "subsample_per_class",
    "textbook_loader", "verify_imagefolder",
]
