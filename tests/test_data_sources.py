"""hw2lib.data.folders and hw2lib.data.sources: checking an ImageFolder, getting and verifying EuroSAT.

Synthetic ImageFolders (conftest and the fixtures here).
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from urllib.error import URLError

import pytest
from PIL import Image

from hw2lib import data as D
from hw2lib.data import folders, sources

FAKE_COUNTS = {"Alpha": 4, "Beta": 3, "Gamma": 5}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _jpeg_bytes(size=16, color=(100, 150, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="JPEG")
    return buf.getvalue()


def _zip_folder(root: Path, zip_path: Path, prefix="2750/", extra=()) -> Path:
    """Zip <root>/<Class>/<file> as <prefix><Class>/<file> (+ extra (name, bytes) members)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        if prefix:
            zf.writestr(prefix, b"")
        for c in sorted(p for p in root.iterdir() if p.is_dir()):
            zf.writestr(f"{prefix}{c.name}/", b"")
            for f in sorted(c.iterdir()):
                zf.write(f, f"{prefix}{c.name}/{f.name}")
        for name, data in extra:
            zf.writestr(name, data)
    return zip_path


@pytest.fixture
def fake_eurosat(monkeypatch, tmp_path, make_imagefolder):
    """A tiny stand-in for EuroSAT (3 classes, 12 images) with no real source reachable: its
    class folder, its zip, and an isolated working directory."""
    monkeypatch.setattr(sources, "EUROSAT_COUNTS", dict(FAKE_COUNTS))
    monkeypatch.delenv(D.ENV_ZIP, raising=False)
    monkeypatch.setattr(sources, "_repo_shared_zip", lambda: tmp_path / "no-shared" / "EuroSAT.zip")
    work = tmp_path / "work" / "cwd"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    folder = make_imagefolder(tmp_path / "src" / "2750", tuple(FAKE_COUNTS), size=16,
                              counts=list(FAKE_COUNTS.values()))
    zip_path = _zip_folder(folder, tmp_path / "EuroSAT.zip")
    return folder, zip_path


def _no_temp_dirs(data_dir: Path) -> bool:
    return not list(data_dir.glob(".eurosat-extract-*"))


# --------------------------------------------------------------------------- verification


def test_verify_counts(small_folder):
    assert D.verify_imagefolder(small_folder) == {"a": 4, "b": 4, "c": 4}
    assert D.verify_imagefolder(small_folder, {"a": 4, "b": 4, "c": 4}) == {"a": 4, "b": 4, "c": 4}


def test_verify_ignores_hidden_files(small_folder):
    (small_folder / ".DS_Store").write_bytes(b"\0")
    (small_folder / "a" / ".thumbs").write_bytes(b"\0")
    assert D.verify_imagefolder(small_folder) == {"a": 4, "b": 4, "c": 4}


def _break(kind: str, root: Path) -> tuple[Path, str]:
    """Damage `root` one way; return the path the error must name and a phrase it must hold."""
    if kind == "truncated":
        p = root / "b" / "b_2.jpg"
        _truncate(p)
        return p, "cannot decode"
    if kind == "undecodable":
        p = root / "c" / "c_3.jpg"
        p.write_bytes(b"this is not a jpeg at all")
        return p, "cannot decode"
    if kind == "empty_class":
        p = root / "d"
        p.mkdir()
        return p, "empty class folder"
    if kind == "text_in_class":
        p = root / "a" / "notes.txt"
        p.write_text("hello")
        return p, "unexpected file"
    if kind == "file_at_root":
        p = root / "labels.csv"
        p.write_text("a,b")
        return p, "unexpected file"
    if kind == "subfolder":
        p = root / "a" / "more"
        p.mkdir()
        return p, "unexpected folder"
    raise AssertionError(kind)


BREAKS = ["truncated", "undecodable", "empty_class", "text_in_class", "file_at_root", "subfolder"]


@pytest.mark.parametrize("kind", BREAKS)
def test_verify_bad_input_names_the_culprit(kind, small_folder):
    culprit, phrase = _break(kind, small_folder)
    before = sorted(p for p in small_folder.rglob("*"))
    with pytest.raises(D.DataError) as err:
        D.verify_imagefolder(small_folder)
    assert str(culprit) in str(err.value) and phrase in str(err.value)
    assert sorted(p for p in small_folder.rglob("*")) == before  # nothing deleted or added


@pytest.mark.parametrize("kind", ["truncated", "text_in_class", "empty_class"])
def test_load_dataset_reports_bad_image_folder(kind, small_folder, tmp_path):
    culprit, _ = _break(kind, small_folder)
    with pytest.raises(D.DataError, match="unexpected|empty|decode") as err:
        D.load_dataset(tmp_path / "data", image_folder=small_folder, image_size=16, progress=False)
    assert str(culprit) in str(err.value)


def test_verify_missing_class_and_wrong_count(small_folder):
    with pytest.raises(D.DataError, match="missing or empty class folder") as err:
        D.verify_imagefolder(small_folder, {"a": 4, "b": 4, "c": 4, "zebra": 4})
    assert str(small_folder / "zebra") in str(err.value)
    with pytest.raises(D.DataError, match="holds 4 images") as err:
        D.verify_imagefolder(small_folder, {"a": 4, "b": 5, "c": 4})
    assert str(small_folder / "b") in str(err.value)
    with pytest.raises(D.DataError, match="unexpected folder") as err:
        D.verify_imagefolder(small_folder, {"a": 4, "b": 4})
    assert str(small_folder / "c") in str(err.value)


def test_verify_missing_root(tmp_path):
    with pytest.raises(D.DataError, match="does not exist") as err:
        D.verify_imagefolder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(D.DataError, match="no class folders"):
        D.verify_imagefolder(tmp_path)


def test_verify_check_decode_false_skips_decoding(small_folder):
    _truncate(small_folder / "a" / "a_1.jpg")
    assert D.verify_imagefolder(small_folder, check_decode=False)["a"] == 4


# --------------------------------------------------------------------------- getting EuroSAT


def test_prepare_extracts_verifies_and_remembers(fake_eurosat, tmp_path, monkeypatch):
    _, zip_path = fake_eurosat
    data_dir = tmp_path / "data"
    root = D.prepare_eurosat(data_dir, source=zip_path, progress=False)
    assert root == data_dir / "eurosat" / "2750"
    assert D.verify_imagefolder(root, FAKE_COUNTS) == FAKE_COUNTS
    assert _no_temp_dirs(data_dir)
    assert (root / "Beta" / "Beta_3.jpg").read_bytes() == zipfile.ZipFile(zip_path).read(
        "2750/Beta/Beta_3.jpg")

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although nothing changed")

    monkeypatch.setattr(folders, "check_image", no_decoding)
    monkeypatch.setattr(sources, "check_image", no_decoding)
    assert D.prepare_eurosat(data_dir, progress=False) == root  # the marker: no re-decoding
    monkeypatch.undo()
    monkeypatch.setattr(sources, "EUROSAT_COUNTS", dict(FAKE_COUNTS))
    _truncate(root / "Gamma" / "Gamma_2.jpg")  # listing changed: verified again, and caught
    with pytest.raises(D.DataError, match="left as it is") as err:
        D.prepare_eurosat(data_dir, progress=False)
    assert str(root / "Gamma" / "Gamma_2.jpg") in str(err.value)
    assert (root / "Gamma" / "Gamma_2.jpg").exists()


def test_prepare_existing_folder_with_extra_file_is_kept(fake_eurosat, tmp_path):
    _, zip_path = fake_eurosat
    data_dir = tmp_path / "data"
    root = D.prepare_eurosat(data_dir, source=zip_path, progress=False)
    extra = root / "Alpha" / "mine.txt"
    extra.write_text("user notes")
    with pytest.raises(D.DataError, match="unexpected file") as err:
        D.prepare_eurosat(data_dir, source=zip_path, progress=False)
    assert str(extra) in str(err.value) and extra.read_text() == "user notes"


@pytest.mark.parametrize("how", ["arg_zip", "arg_2750", "arg_parent", "env_zip", "data_dir_zip",
                                 "cwd_shared_zip"])
def test_prepare_sources(how, fake_eurosat, tmp_path, monkeypatch):
    folder, zip_path = fake_eurosat
    data_dir = tmp_path / "data"
    source = None
    if how == "arg_zip":
        source = zip_path
    elif how == "arg_2750":
        source = folder
    elif how == "arg_parent":
        source = folder.parent
    elif how == "env_zip":
        monkeypatch.setenv(D.ENV_ZIP, str(zip_path))
    elif how == "data_dir_zip":
        data_dir.mkdir()
        shutil.copy(zip_path, data_dir / "EuroSAT.zip")
    elif how == "cwd_shared_zip":  # ../shared/data/EuroSAT.zip from the working directory
        shared = Path.cwd().parent / "shared" / "data"
        shared.mkdir(parents=True)
        shutil.copy(zip_path, shared / "EuroSAT.zip")
    root = D.prepare_eurosat(data_dir, source=source, download=False, progress=False)
    # an extracted folder is used in place (never copied); a zip is extracted into data_dir
    assert root == (folder if how.startswith("arg_2") or how == "arg_parent"
                    else data_dir / "eurosat" / "2750")
    assert D.verify_imagefolder(root) == FAKE_COUNTS


def test_prepare_env_var_pointing_nowhere(fake_eurosat, tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_ZIP, str(tmp_path / "missing.zip"))
    with pytest.raises(D.DataError, match=D.ENV_ZIP) as err:
        D.prepare_eurosat(tmp_path / "data", progress=False)
    assert str(tmp_path / "missing.zip") in str(err.value)


def test_prepare_offline_without_copy_says_where_to_put_it(fake_eurosat, tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(D.DataError) as err:
        D.prepare_eurosat(data_dir, download=False, progress=False)
    msg = str(err.value)
    assert str((data_dir / "EuroSAT.zip").absolute()) in msg
    assert D.ENV_ZIP in msg and "../shared/data/EuroSAT.zip" in msg and "--source" in msg


def test_prepare_download_failure_is_explained(fake_eurosat, tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise URLError("no network")

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(D.DataError, match="download failed") as err:
        D.prepare_eurosat(tmp_path / "data", progress=False)
    assert D.ENV_ZIP in str(err.value) and "no network" in str(err.value)
    assert not (tmp_path / "data" / "eurosat").exists()


def test_prepare_downloads_with_md5_then_extracts(fake_eurosat, tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    _, zip_path = fake_eurosat
    calls = []

    def fake_download(url, root, filename=None, md5=None, **kw):
        calls.append((url, md5))
        shutil.copy(zip_path, Path(root) / filename)

    monkeypatch.setattr(tvu, "download_url", fake_download)
    data_dir = tmp_path / "data"
    root = D.prepare_eurosat(data_dir, progress=False)
    assert calls == [(D.EUROSAT_URL, D.EUROSAT_MD5)]
    assert (data_dir / "EuroSAT.zip").is_file() and not (data_dir / "EuroSAT.zip.part").exists()
    assert D.verify_imagefolder(root) == FAKE_COUNTS


def test_interrupted_extraction_leaves_no_dataset(fake_eurosat, tmp_path, monkeypatch):
    _, zip_path = fake_eurosat
    data_dir = tmp_path / "data"
    real_check = sources.check_image
    seen = []

    def interrupt_midway(src, name):
        seen.append(name)
        if len(seen) == 6:
            raise KeyboardInterrupt
        real_check(src, name)

    monkeypatch.setattr(sources, "check_image", interrupt_midway)
    with pytest.raises(KeyboardInterrupt):
        D.prepare_eurosat(data_dir, source=zip_path, progress=False)
    assert not (data_dir / "eurosat" / "2750").exists() and _no_temp_dirs(data_dir)
    monkeypatch.setattr(sources, "check_image", real_check)
    assert D.verify_imagefolder(D.prepare_eurosat(data_dir, source=zip_path,
                                                  progress=False)) == FAKE_COUNTS


@pytest.mark.parametrize("damage", ["truncated", "text", "missing_class", "wrong_count"])
def test_bad_archive_names_the_member(damage, fake_eurosat, tmp_path):
    folder, _ = fake_eurosat
    extra = ()
    if damage == "truncated":
        _truncate(folder / "Beta" / "Beta_2.jpg")
        culprit = "2750/Beta/Beta_2.jpg"
    elif damage == "text":
        extra = [("2750/Alpha/readme.txt", b"hi")]
        culprit = "2750/Alpha/readme.txt"
    elif damage == "missing_class":
        shutil.rmtree(folder / "Gamma")
        culprit = "2750/Gamma/"
    else:
        (folder / "Alpha" / "Alpha_4.jpg").unlink()
        culprit = "2750/Alpha/"
    zip_path = _zip_folder(folder, tmp_path / "bad.zip", extra=extra)
    data_dir = tmp_path / "data"
    with pytest.raises(D.DataError) as err:
        D.prepare_eurosat(data_dir, source=zip_path, progress=False)
    assert culprit in str(err.value) and str(zip_path) in str(err.value)
    assert not (data_dir / "eurosat" / "2750").exists() and _no_temp_dirs(data_dir)


def test_not_a_zip(fake_eurosat, tmp_path):
    bad = tmp_path / "EuroSAT-broken.zip"
    bad.write_bytes(b"PK but not really")
    with pytest.raises(D.DataError, match="not a readable zip") as err:
        D.prepare_eurosat(tmp_path / "data", source=bad, progress=False)
    assert str(bad) in str(err.value)


def test_zip_without_2750_prefix_and_hidden_junk(fake_eurosat, tmp_path):
    folder, _ = fake_eurosat
    zip_path = _zip_folder(folder, tmp_path / "flat.zip", prefix="",
                           extra=[("__MACOSX/._Alpha_1.jpg", b"x"), ("Alpha/.DS_Store", b"x")])
    root = D.prepare_eurosat(tmp_path / "data", source=zip_path, progress=False)
    assert D.verify_imagefolder(root) == FAKE_COUNTS


def test_load_dataset_eurosat_from_zip(fake_eurosat, tmp_path):
    _, zip_path = fake_eurosat
    ds = D.load_dataset(tmp_path / "data", source=zip_path, image_size=16, progress=False)
    assert ds.classes == list(FAKE_COUNTS) and len(ds) == 12
    assert ds.split_csv.name == "eurosat-seed0-60-20-20.csv"
    with pytest.raises(ValueError, match="not both"):
        D.load_dataset(tmp_path / "data", source=zip_path, image_folder=tmp_path)


# --------------------------------------------------------------------------- broken links


def test_broken_symlink_in_a_class_folder_is_named(small_folder):
    link = small_folder / "b" / "b_9.jpg"
    link.symlink_to(small_folder / "nowhere.jpg")
    with pytest.raises(D.DataError, match="broken symbolic link") as err:
        D.verify_imagefolder(small_folder)
    assert str(link) in str(err.value) and str(small_folder / "nowhere.jpg") in str(err.value)
    assert link.is_symlink()  # nothing deleted


def test_broken_symlink_at_the_root_or_as_the_root(small_folder, tmp_path):
    link = small_folder / "d"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(D.DataError, match="broken symbolic link") as err:
        D.verify_imagefolder(small_folder)
    assert str(link) in str(err.value)
    root_link = tmp_path / "images-link"
    root_link.symlink_to(tmp_path / "moved-away")
    with pytest.raises(D.DataError, match="broken symbolic link") as err:
        D.verify_imagefolder(root_link)
    assert str(root_link) in str(err.value)


def test_broken_symlink_as_source_or_env(fake_eurosat, tmp_path, monkeypatch):
    link = tmp_path / "EuroSAT-link.zip"
    link.symlink_to(tmp_path / "elsewhere" / "EuroSAT.zip")
    with pytest.raises(D.DataError, match="broken symbolic link") as err:
        D.prepare_eurosat(tmp_path / "data", source=link, progress=False)
    assert str(link) in str(err.value) and "elsewhere" in str(err.value)
    monkeypatch.setenv(D.ENV_ZIP, str(link))
    with pytest.raises(D.DataError, match=f"{D.ENV_ZIP}.*broken symbolic link"):
        D.prepare_eurosat(tmp_path / "data", progress=False)


def test_symlinked_images_that_resolve_are_fine(small_folder, tmp_path):
    real = tmp_path / "real.jpg"
    real.write_bytes((small_folder / "a" / "a_1.jpg").read_bytes())
    (small_folder / "a" / "a_9.jpg").symlink_to(real)
    assert D.verify_imagefolder(small_folder)["a"] == 5
