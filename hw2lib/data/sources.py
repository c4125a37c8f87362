"""Getting EuroSAT RGB: find the archive or an extracted folder (or download it), extract it
through a temporary folder, and verify it against the official class counts."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

from hw2lib.data.common import IMAGE_EXTENSIONS, DataError, run_chunks, why_missing
from hw2lib.data.folders import (
    Listing,
    check_image,
    record_verified,
    require_expected_counts,
    scan,
    verified,
)

EUROSAT_URL = ("https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
               "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip")  # torchvision's
EUROSAT_MD5 = "c8fa014336c82ac7804f0398fcb19387"
EUROSAT_COUNTS = {
    "AnnualCrop": 3000, "Forest": 3000, "HerbaceousVegetation": 3000, "Highway": 2500,
    "Industrial": 2500, "Pasture": 2000, "PermanentCrop": 2500, "Residential": 3000,
    "River": 2500, "SeaLake": 3000,
}
EUROSAT_CLASSES = tuple(sorted(EUROSAT_COUNTS))
ENV_ZIP = "HW2_EUROSAT_ZIP"


def _repo_shared_zip() -> Path:
    """../shared/data/EuroSAT.zip beside the source checkout (repo root = parent of hw2lib/)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "EuroSAT.zip"


def _where_to_put(data_dir: Path, why: str) -> str:
    return (f"EuroSAT is not available: {why}. Do one of: put the archive (EuroSAT.zip, the RGB "
            f"version with 2750/<Class>/*.jpg) at {(data_dir / 'EuroSAT.zip').absolute()} or at "
            f"{Path('../shared/data/EuroSAT.zip').absolute()}; set {ENV_ZIP}=/path/to/EuroSAT.zip; "
            "pass source=PATH (`hw2 data --source PATH`, a zip or an extracted folder); or connect "
            f"to the internet so that it can be downloaded from {EUROSAT_URL}")


def _find_source(data_dir: Path, source) -> Path | None:
    if source is not None:
        p = Path(source).expanduser()
        if not p.exists():
            raise DataError(f"source {p} {why_missing(p)}: give a EuroSAT zip or extracted "
                            "folder that exists")
        return p
    env = os.environ.get(ENV_ZIP)
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise DataError(f"${ENV_ZIP} points to {p}, which {why_missing(p)}: point it at "
                            "EuroSAT.zip or unset it")
        return p
    for p in (data_dir / "EuroSAT.zip", Path("../shared/data/EuroSAT.zip"), _repo_shared_zip()):
        if p.is_file():
            return p
    return None


def _folder_root(p: Path) -> Path:
    """An extracted EuroSAT folder given as source: the 2750 folder, its parent, or the parent's
    parent (torchvision's root holding eurosat/2750)."""
    for cand in (p / "2750", p / "eurosat" / "2750"):
        if cand.is_dir():
            return cand
    return p


def _download(data_dir: Path) -> Path:
    from torchvision.datasets.utils import download_url

    data_dir.mkdir(parents=True, exist_ok=True)
    part = data_dir / "EuroSAT.zip.part"
    try:
        download_url(EUROSAT_URL, str(data_dir), filename=part.name, md5=EUROSAT_MD5)
    except Exception as exc:  # URLError, HTTPError, timeouts, md5 mismatch, ...
        raise DataError(_where_to_put(data_dir, f"nothing found locally and the download "
                                                f"failed ({type(exc).__name__}: {exc})")) from exc
    target = data_dir / "EuroSAT.zip"
    os.replace(part, target)
    return target


def _zip_members(zf: zipfile.ZipFile, zip_path: Path, expected: dict[str, int]):
    """[(member, class, file name)] of the archive's images, after checking its structure against
    `expected`. The images sit in <prefix><Class>/<file> (prefix "2750/" in the official one)."""
    files = [i for i in zf.infolist() if not i.is_dir()
             and not any(p.startswith(".") or p == "__MACOSX" for p in i.filename.split("/"))]
    prefixes: dict[str, int] = {}
    for i in files:
        parts = i.filename.split("/")
        if len(parts) >= 2 and i.filename.lower().endswith(IMAGE_EXTENSIONS):
            pre = "/".join(parts[:-2] + [""]) if len(parts) > 2 else ""
            prefixes[pre] = prefixes.get(pre, 0) + 1
    if not prefixes:
        raise DataError(f"{zip_path} holds no images in class folders (expected "
                        "2750/<Class>/*.jpg): is it the EuroSAT RGB archive?")
    prefix = max(prefixes, key=prefixes.get)
    members = []
    for i in files:
        rest = i.filename[len(prefix):].split("/") if i.filename.startswith(prefix) else []
        if len(rest) != 2 or not rest[1].lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"unexpected file {i.filename} in {zip_path}: EuroSAT's archive "
                            f"holds only images in {prefix}<Class>/; use the official archive")
        members.append((i, rest[0], rest[1]))
    counts: dict[str, int] = {}
    for _, c, _ in members:
        counts[c] = counts.get(c, 0) + 1
    require_expected_counts(counts, expected, lambda c: f"{prefix}{c}/ in {zip_path}",
                            f"EuroSAT ({sum(expected.values()):,} images)")
    return sorted(members, key=lambda m: (m[1], m[2]))


def _extract(zip_path: Path, target: Path, data_dir: Path, expected, progress: bool) -> None:
    """Check and extract the archive's images into a temporary folder inside data_dir, decoding
    each one as it goes, then rename the finished folder to `target` in one step."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{zip_path} is not a readable zip archive ({exc}): download it again or "
                        "point source / $HW2_EUROSAT_ZIP at a good copy") from exc
    with zf:
        members = _zip_members(zf, zip_path, expected)
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob(".eurosat-extract-*"):  # our own leftovers of a killed extraction
        if time.time() - old.stat().st_mtime > 6 * 3600:
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".eurosat-extract-", dir=data_dir))
    handles, lock, local = [], threading.Lock(), threading.local()
    try:
        dest = tmp / target.name
        for c in sorted({m[1] for m in members}):
            (dest / c).mkdir(parents=True)

        def work(a, b):
            if not hasattr(local, "zf"):
                local.zf = zipfile.ZipFile(zip_path)
                with lock:
                    handles.append(local.zf)
            for info, c, name in members[a:b]:
                try:
                    data = local.zf.read(info)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    raise DataError(f"cannot read {info.filename} from {zip_path} ({exc}): the "
                                    "archive is damaged; download it again") from exc
                check_image(data, f"{info.filename} in {zip_path}")
                (dest / c / name).write_bytes(data)

        run_chunks(work, len(members), progress=progress, desc="extracting EuroSAT")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(dest, target)
        except OSError:
            if not target.is_dir():  # else another process finished the same extraction first
                raise
    finally:
        for h in handles:
            h.close()
        shutil.rmtree(tmp, ignore_errors=True)


def eurosat_listing(data_dir: Path, source, download: bool, progress: bool) -> Listing:
    """`prepare_eurosat`, returning the verified folder's listing."""
    expected = dict(EUROSAT_COUNTS)
    target = data_dir / "eurosat" / "2750"
    src = None
    if source is not None or not target.exists():
        src = _find_source(data_dir, source)
    if src is not None and src.is_dir():
        try:
            return verified(_folder_root(src), expected, data_dir, progress)
        except DataError as exc:
            if source is None and os.environ.get(ENV_ZIP):  # say where the folder came from
                raise DataError(f"${ENV_ZIP}={os.environ[ENV_ZIP]} names the folder {src}, which "
                                f"is not an extracted EuroSAT: {exc}; point ${ENV_ZIP} at "
                                "EuroSAT.zip or its extracted 2750 folder, or unset it") from exc
            raise
    if target.exists():
        try:
            return verified(target, expected, data_dir, progress)
        except DataError as exc:
            raise DataError(f"{target} exists but is not a complete, intact EuroSAT: {exc}. It was "
                            "left as it is: repair it, or move it away to extract the archive again"
                            ) from exc
    if src is None:
        if not download:
            raise DataError(_where_to_put(data_dir, "no local copy was found and download=False"))
        src = _download(data_dir)
    _extract(src, target, data_dir, expected, progress)
    listing = scan(target)  # decoded while extracting: record it without decoding again
    require_expected_counts(listing.counts(), expected, lambda c: target / c, "EuroSAT")
    record_verified(data_dir, listing, expected)
    return listing


def prepare_eurosat(data_dir="data", source=None, *, download=True, progress=True) -> Path:
    """Make EuroSAT RGB available and verified; return its ImageFolder root
    (`data_dir/eurosat/2750`, or the extracted folder given as `source`).

    Sources, first found wins: `source` (a zip, or an extracted folder — the `2750` folder or one
    above it — which is then used in place), `$HW2_EUROSAT_ZIP`, `data_dir/EuroSAT.zip`,
    `../shared/data/EuroSAT.zip` (from the working directory, then beside the source checkout),
    then a download of the official archive (torchvision's URL, md5-checked) into `data_dir`.
    A zip is extracted only when `data_dir/eurosat/2750` does not exist yet, through a temporary
    folder renamed into place, so an interrupted extraction never looks complete.

    Verification: the 10 class folders with their exact counts (27,000 images), nothing else in
    them, and every image decodes as RGB. The full decode is remembered in a marker file under
    `data_dir/cache/` and redone only when the folder's listing changes, so a second call returns
    in well under a second. Problems raise `DataError` naming the file or folder.
    """
    return eurosat_listing(Path(data_dir), source, download, progress).root
