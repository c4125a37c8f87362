"""hw2lib.data: verification, getting EuroSAT, splits, the long tail, the cache, the loaders.

Synthetic ImageFolders (conftest) for everything; the real archive for the `realdata` tests.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from hw2lib import data as D

FAKE_COUNTS = {"Alpha": 4, "Beta": 3, "Gamma": 5}


# --------------------------------------------------------------------------- helpers / fixtures


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
    monkeypatch.setattr(D, "EUROSAT_COUNTS", dict(FAKE_COUNTS))
    monkeypatch.delenv(D.ENV_ZIP, raising=False)
    monkeypatch.setattr(D, "_repo_shared_zip", lambda: tmp_path / "no-shared" / "EuroSAT.zip")
    work = tmp_path / "work" / "cwd"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    folder = make_imagefolder(tmp_path / "src" / "2750", tuple(FAKE_COUNTS), size=16,
                              counts=list(FAKE_COUNTS.values()))
    zip_path = _zip_folder(folder, tmp_path / "EuroSAT.zip")
    return folder, zip_path


@pytest.fixture
def small_folder(tmp_path, make_imagefolder) -> Path:
    return make_imagefolder(tmp_path / "images", ("a", "b", "c"), per_class=4, size=16)


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory, make_imagefolder):
    """3 classes × 20 JPEGs of 32×32, split and cached at 32×32."""
    base = tmp_path_factory.mktemp("small-ds")
    root = make_imagefolder(base / "images", ("cat", "dog", "eel"), per_class=20, size=32)
    return D.load_dataset(base / "data", image_folder=root, image_size=32, progress=False)


def _no_temp_dirs(data_dir: Path) -> bool:
    return not list(data_dir.glob(".eurosat-extract-*"))


# --------------------------------------------------------------------------- constants


def test_constants():
    assert list(D.EUROSAT_CLASSES) == sorted(D.EUROSAT_COUNTS) and len(D.EUROSAT_CLASSES) == 10
    assert sum(D.EUROSAT_COUNTS.values()) == 27_000
    assert D.EUROSAT_MD5 == "c8fa014336c82ac7804f0398fcb19387" and D.EUROSAT_URL.endswith(".zip")
    assert D.AUGMENT_PRESETS == ("none", "basic", "color")
    assert issubclass(D.DataError, RuntimeError)


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

    monkeypatch.setattr(D, "_check_image", no_decoding)
    assert D.prepare_eurosat(data_dir, progress=False) == root  # the marker: no re-decoding
    monkeypatch.undo()
    monkeypatch.setattr(D, "EUROSAT_COUNTS", dict(FAKE_COUNTS))
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
    real_check = D._check_image
    seen = []

    def interrupt_midway(src, name):
        seen.append(name)
        if len(seen) == 6:
            raise KeyboardInterrupt
        real_check(src, name)

    monkeypatch.setattr(D, "_check_image", interrupt_midway)
    with pytest.raises(KeyboardInterrupt):
        D.prepare_eurosat(data_dir, source=zip_path, progress=False)
    assert not (data_dir / "eurosat" / "2750").exists() and _no_temp_dirs(data_dir)
    monkeypatch.setattr(D, "_check_image", real_check)
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


# --------------------------------------------------------------------------- splits


def test_split_sizes():
    assert D._split_sizes(3000, (0.6, 0.2, 0.2)) == [1800, 600, 600]
    assert D._split_sizes(2500, (0.6, 0.2, 0.2)) == [1500, 500, 500]
    assert D._split_sizes(2000, (0.6, 0.2, 0.2)) == [1200, 400, 400]
    assert D._split_sizes(12, (0.6, 0.2, 0.2)) == [7, 2, 3]
    for n in range(3, 12):  # small classes keep at least one image in every split
        sizes = D._split_sizes(n, (0.6, 0.2, 0.2))
        assert sum(sizes) == n and min(sizes) >= 1


def test_split_is_deterministic_and_stratified(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "img", ("a", "b", "c"), counts=[10, 15, 20], size=8)
    a = D.load_dataset(tmp_path / "d1", image_folder=root, image_size=8, progress=False)
    b = D.load_dataset(tmp_path / "d2", image_folder=root, image_size=8, progress=False)
    c = D.load_dataset(tmp_path / "d3", image_folder=root, image_size=8, split_seed=1,
                       progress=False)
    assert a.split_csv.read_bytes() == b.split_csv.read_bytes()  # same seed, same bytes
    assert a.split_csv.read_bytes() != c.split_csv.read_bytes()
    assert a.split_csv.read_text().splitlines()[0] == "path,label,class,split"
    for ds in (a, c):
        for k, n in enumerate([10, 15, 20]):
            sizes = D._split_sizes(n, (0.6, 0.2, 0.2))
            got = [int(((ds.y.numpy() == k) & (ds.split == s)).sum()) for s in D.SPLITS]
            assert got == sizes
    assert a.class_counts("train") == [6, 9, 12] and a.class_counts("test") == [2, 3, 4]


def test_split_written_once_and_hand_edits_honoured(small_folder, tmp_path):
    data_dir = tmp_path / "data"
    ds = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    stamp = ds.split_csv.stat().st_mtime_ns
    time.sleep(0.01)
    again = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert again.split_csv.stat().st_mtime_ns == stamp
    lines = ds.split_csv.read_text().splitlines()
    row = lines[1].rsplit(",", 1)[0]
    lines[1] = row + ",val" if not lines[1].endswith(",val") else row + ",test"
    ds.split_csv.write_text("\n".join(lines) + "\n")
    edited = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert edited.split[0] == lines[1].rsplit(",", 1)[1]


def test_split_file_errors(small_folder, tmp_path):
    data_dir = tmp_path / "data"
    ds = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    lines = ds.split_csv.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",holdout"
    ds.split_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(D.DataError, match="line 4") as err:
        D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert str(ds.split_csv) in str(err.value)
    with pytest.raises(ValueError, match="fractions"):
        D.load_dataset(data_dir, image_folder=small_folder, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="image_size"):
        D.load_dataset(data_dir, image_folder=small_folder, image_size=0)


# --------------------------------------------------------------------------- the cache


def test_dataset_api(small_ds):
    ds = small_ds
    assert ds.classes == ["cat", "dog", "eel"] and ds.num_classes == 3 and len(ds) == 60
    assert ds.x.dtype == torch.uint8 and tuple(ds.x.shape) == (60, 3, 32, 32)
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    assert ds.paths[0] == "cat/cat_1.jpg" and (ds.root / ds.paths[0]).is_file()
    tr = ds.indices("train")
    assert len(tr) == 36 and (ds.split[tr] == "train").all()
    assert sorted(np.concatenate([ds.indices(s) for s in D.SPLITS]).tolist()) == list(range(60))
    x, y = ds.tensors("val")
    assert x.shape == (12, 3, 32, 32) and torch.equal(y, ds.y[ds.indices("val")])
    x2, y2 = ds.tensors("train", [0, 5])
    assert torch.equal(x2, ds.x[tr[[0, 5]]]) and torch.equal(y2, ds.y[tr[[0, 5]]])
    assert ds.class_counts("train") == [12, 12, 12]
    assert "60 images" in repr(ds)
    with pytest.raises(ValueError, match="train"):
        ds.indices("training")


def test_cache_holds_the_decoded_images(small_ds):
    for i in (0, 25, 59):
        with Image.open(small_ds.root / small_ds.paths[i]) as im:
            ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(small_ds.x[i], ref)
    assert small_ds.cache_path.parent.name == "cache" and small_ds.cache_path.suffix == ".pt"


def test_cache_reused_then_rebuilt_on_changed_split(small_folder, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    ds = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    real = D._decode_resized
    calls = []

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(D, "_decode_resized", counting)
    again = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert calls == [] and again.cache_path == ds.cache_path and torch.equal(again.x, ds.x)
    # reorder the split file and move one image to another split: a new cache, same pixels
    lines = ds.split_csv.read_text().splitlines()
    body = lines[1:][::-1]
    body[0] = body[0].rsplit(",", 1)[0] + (",test" if body[0].endswith("train") else ",train")
    ds.split_csv.write_text("\n".join([lines[0]] + body) + "\n")
    edited = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert len(calls) == 12 and edited.cache_path != ds.cache_path
    assert edited.paths == ds.paths[::-1] and torch.equal(edited.x, ds.x.flip(0))
    assert edited.split[0] != ds.split[-1]
    # another image size: its own cache
    big = D.load_dataset(data_dir, image_folder=small_folder, image_size=24, progress=False)
    assert big.x.shape == (12, 3, 24, 24) and big.cache_path != edited.cache_path


def test_cache_rebuilt_on_changed_dataset(small_folder, tmp_path):
    data_dir = tmp_path / "data"
    ds = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    (small_folder / "b" / "b_new.jpg").write_bytes(_jpeg_bytes(16))
    with pytest.warns(UserWarning, match="writing a new one"):
        grown = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert len(grown) == 13 and "b/b_new.jpg" in grown.paths
    assert grown.cache_path != ds.cache_path
    row = grown.paths.index("b/b_new.jpg")
    rgb = grown.x[row].float().mean(dim=(1, 2))
    torch.testing.assert_close(rgb, torch.tensor([100.0, 150.0, 200.0]), atol=2, rtol=0)


def test_other_sizes_are_resized(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "img", ("a", "b"), per_class=3, size=(40, 24), ext=".png")
    Image.new("L", (10, 10), 128).save(root / "a" / "gray.png")
    ds = D.load_dataset(tmp_path / "data", image_folder=root, image_size=20, progress=False)
    assert tuple(ds.x.shape) == (7, 3, 20, 20)
    assert (ds.x[ds.paths.index("a/gray.png")] == 128).all()


def test_damaged_cache_is_rebuilt(small_folder, tmp_path):
    data_dir = tmp_path / "data"
    ds = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    ds.cache_path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert torch.equal(again.x, ds.x)


# --------------------------------------------------------------------------- the long tail


def test_long_tail_profile_monotone_ratio_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    np.random.default_rng(0).shuffle(labels)
    idx, counts = D.long_tail_indices(labels, 10, rho=10.0, seed=3)
    profile = [round(100 * 10 ** (-i / 9)) for i in range(10)]
    assert sorted(counts, reverse=True) == profile
    assert max(counts) / min(counts) == pytest.approx(10.0)
    assert np.bincount(labels[idx], minlength=10).tolist() == counts
    assert len(np.unique(idx)) == len(idx) == sum(counts) and (np.diff(idx) > 0).all()
    order = np.random.default_rng(3).permutation(10)  # the seeded class order
    assert all(counts[a] >= counts[b] for a, b in zip(order, order[1:], strict=False))
    idx2, counts2 = D.long_tail_indices(labels, 10, rho=10.0, seed=3)
    assert np.array_equal(idx, idx2) and counts == counts2
    _, counts3 = D.long_tail_indices(labels, 10, rho=10.0, seed=4)
    assert counts3 != counts and sorted(counts3, reverse=True) == profile


def test_long_tail_default_n_max_and_rho_100():
    labels = np.repeat(np.arange(10), [1800, 1800, 1800, 1500, 1500, 1200, 1500, 1800, 1500, 1800])
    idx, counts = D.long_tail_indices(labels, 10)
    assert counts[int(np.argmax(counts))] <= 1800 and min(counts) == 18
    order = np.random.default_rng(0).permutation(10)
    seq = [counts[c] for c in order]
    assert seq == sorted(seq, reverse=True)  # monotone even where a class has fewer images
    assert len(idx) == sum(counts)


def test_long_tail_n_max_capped_by_available():
    labels = np.repeat(np.arange(4), 7)
    idx, counts = D.long_tail_indices(labels, 4, rho=8.0, n_max=8, seed=0)
    seq = [counts[c] for c in np.random.default_rng(0).permutation(4)]
    assert seq == sorted(seq, reverse=True) and max(seq) == 7 and min(seq) == 1
    assert len(idx) == sum(counts)


def test_long_tail_explicit_counts_and_errors():
    labels = np.repeat(np.arange(3), 10)
    idx, counts = D.long_tail_indices(labels, 3, counts=[10, 4, 1])
    assert counts == [10, 4, 1] and np.bincount(labels[idx]).tolist() == [10, 4, 1]
    with pytest.raises(ValueError, match="only 10"):
        D.long_tail_indices(labels, 3, counts=[11, 4, 1])
    with pytest.raises(ValueError, match="3 non-negative"):
        D.long_tail_indices(labels, 3, counts=[1, 2])
    with pytest.raises(ValueError, match="rho"):
        D.long_tail_indices(labels, 3, rho=0.5)


def test_long_tail_positions_index_the_train_split(small_ds):
    rows = small_ds.indices("train")
    pos, counts = D.long_tail_indices(small_ds.y[rows].numpy(), 3, rho=4.0)
    x, y = small_ds.tensors("train", pos)
    assert np.bincount(y.numpy(), minlength=3).tolist() == counts and max(counts) == 12
    assert torch.equal(x, small_ds.x[rows[pos]])


# --------------------------------------------------------------------------- augmentation


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_augment_none_is_identity_and_presets_checked():
    x = torch.rand(4, 3, 8, 8)
    assert D.augment_batch(x, "none", _gen()) is x
    with pytest.raises(ValueError, match="'none', 'basic', 'color'"):
        D.augment_batch(x, "fancy", _gen())
    with pytest.raises(ValueError, match="'none', 'basic', 'color'"):
        D.BatchLoader(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2), augment="heavy")


def test_basic_without_padding_is_flip_or_not():
    x = torch.rand(32, 3, 8, 8)
    out = D.augment_batch(x, "basic", _gen(), padding=0)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and 0 < sum(flipped) < 32
    vout = D.augment_batch(x, "basic", _gen(), padding=0, vflip=True)
    assert any(torch.equal(o, xi.flip(-2)) or torch.equal(o, xi.flip(-1, -2))
               for o, xi in zip(vout, x, strict=True))


def _match_crop(out, img, p):
    """(dy, dx, flipped) such that out is a window of zero-padded img (flipped or not), or None."""
    h, w = img.shape[-2:]
    for flip in (False, True):
        src = torch.nn.functional.pad(img.flip(-1) if flip else img, (p, p, p, p))
        for dy in range(2 * p + 1):
            for dx in range(2 * p + 1):
                if torch.equal(src[:, dy:dy + h, dx:dx + w], out):
                    return dy, dx, flip
    return None


def test_basic_crops_are_padded_shifts_and_vary_per_sample():
    img = torch.rand(1, 3, 10, 10)
    x = img.repeat(16, 1, 1, 1)
    out = D.augment_batch(x, "basic", _gen(1), padding=2)
    matches = [_match_crop(o, img[0], 2) for o in out]
    assert all(m is not None for m in matches)
    assert len(set(matches)) > 4  # per-sample parameters, not one per batch
    again = D.augment_batch(x, "basic", _gen(1), padding=2)
    assert torch.equal(out, again)  # the generator decides everything


def test_color_jitter_varies_per_sample_and_stays_in_range():
    img = torch.rand(1, 3, 12, 12) * 0.6 + 0.2
    x = img.repeat(16, 1, 1, 1)
    out = D.augment_batch(x, "color", _gen(2), padding=0)
    assert out.min() >= 0 and out.max() <= 1 and out.dtype == x.dtype
    means = out.mean(dim=(1, 2, 3))
    assert means.std() > 0.01  # brightness differs per sample
    sat = (out - out.mean(1, keepdim=True)).abs().mean(dim=(1, 2, 3))
    assert sat.std() > 0.001  # so does saturation
    assert torch.equal(x, img.repeat(16, 1, 1, 1))  # input untouched


def test_color_matches_torchvision_factors():
    """Brightness, contrast, saturation as torchvision defines them (fixed factors, no clipping)."""
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(1, 3, 8, 8) * 0.5 + 0.25
    fb, fc, fs = 1.1, 0.8, 1.2
    ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, fb), fc), fs)
    gray_mean = TF.rgb_to_grayscale(x * fb).mean() / fb
    mat, shift = D._color_matrix(torch.tensor([fb]), torch.tensor([fc]), torch.tensor([fs]),
                                 gray_mean.view(1))
    out = D._apply_affine(x, mat, shift).clamp(0, 1)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- the fast loader


def test_loader_shapes_dtypes_ranges(small_ds):
    x, y = small_ds.tensors("train")
    for aug in D.AUGMENT_PRESETS:
        loader = D.BatchLoader(x, y, 16, shuffle=True, augment=aug)
        batches = list(loader)
        assert len(loader) == len(batches) == 3 and [len(b[1]) for b in batches] == [16, 16, 4]
        xb, yb = batches[0]
        assert xb.dtype == torch.float32 and xb.shape == (16, 3, 32, 32) and yb.dtype == torch.int64
        mean, std = torch.tensor(D.EUROSAT_MEAN), torch.tensor(D.EUROSAT_STD)
        lo, hi = (-mean / std).view(1, 3, 1, 1), ((1 - mean) / std).view(1, 3, 1, 1)
        assert (xb >= lo - 1e-5).all() and (xb <= hi + 1e-5).all()
    loader = D.BatchLoader(x, y, 16, drop_last=True)
    assert len(loader) == 2 and loader.num_samples == 36 and loader.batch_size == 16
    assert loader.targets.dtype == torch.int64 and loader.device == torch.device("cpu")


def test_loader_none_is_normalization_only(small_ds):
    x, y = small_ds.tensors("val")
    xb, yb = next(iter(D.BatchLoader(x, y, 100, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))))
    torch.testing.assert_close(xb, (x.float() / 255 - 0.5) / 0.25)
    assert torch.equal(yb, y)


def test_loader_shuffle_epochs_and_seeds():
    n = 50
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    y = torch.arange(n)

    def epoch_orders(loader, epochs=2):
        return [torch.cat([yb for _, yb in loader]).tolist() for _ in range(epochs)]

    a = epoch_orders(D.BatchLoader(x, y, 8, shuffle=True, seed=5))
    b = epoch_orders(D.BatchLoader(x, y, 8, shuffle=True, seed=5))
    c = epoch_orders(D.BatchLoader(x, y, 8, shuffle=True, seed=6))
    assert a == b and a != c and a[0] != a[1]
    assert all(sorted(o) == list(range(n)) for o in a + c)
    assert epoch_orders(D.BatchLoader(x, y, 8), 1)[0] == list(range(n))
    # the images travel with their labels
    for xb, yb in D.BatchLoader(x, y, 8, shuffle=True, mean=(0,) * 3, std=(1,) * 3):
        assert torch.allclose(xb[:, 0, 0, 0] * 255, yb.float())


def test_loader_color_equals_reference_augment_batch(small_ds):
    x, y = small_ds.tensors("train")
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    fast = D.BatchLoader(x, y, 16, shuffle=True, augment="color", seed=9, mean=mean, std=std)
    g = torch.Generator().manual_seed(9)
    order = torch.randperm(len(y), generator=g)
    for k, (xb, yb) in enumerate(fast):
        idx = order[k * 16:(k + 1) * 16]
        ref = D.augment_batch(x[idx].float() / 255, "color", g)
        ref = (ref - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(xb, ref, atol=1e-4, rtol=1e-4)
        assert torch.equal(yb, y[idx])


def test_loader_balanced_sampling():
    y = torch.tensor([0] * 270 + [1] * 27 + [2] * 3)
    x = torch.zeros(300, 3, 4, 4, dtype=torch.uint8)
    loader = D.BatchLoader(x, y, 64, balanced=True, seed=0)
    seen = torch.cat([yb for _, yb in loader])
    assert len(seen) == 300 and len(loader) == 5
    freq = torch.bincount(seen, minlength=3).float() / 300
    assert (freq - 1 / 3).abs().max() < 0.08
    again = torch.cat([yb for _, yb in D.BatchLoader(x, y, 64, balanced=True, seed=0)])
    assert torch.equal(seen, again)


def test_loader_resize_and_float_input(small_ds):
    x, y = small_ds.tensors("test")
    xb, _ = next(iter(D.BatchLoader(x, y, 4, resize=48, augment="basic")))
    assert xb.shape == (4, 3, 48, 48)
    xf = x.float() / 255
    a, _ = next(iter(D.BatchLoader(xf, y, 4)))
    b, _ = next(iter(D.BatchLoader(x, y, 4)))
    torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- the textbook path


def test_textbook_none_equals_fast_none(small_ds):
    fast = D.BatchLoader(*small_ds.tensors("val"), 5)
    text = D.textbook_loader(small_ds, "val", batch_size=5, num_workers=0)
    assert len(text) == len(fast)
    for (a, ya), (b, yb) in zip(fast, text, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        assert torch.equal(ya, yb)


def test_textbook_matches_cache_for_resized_images(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "img", ("a", "b"), per_class=3, size=(30, 20))
    ds = D.load_dataset(tmp_path / "data", image_folder=root, image_size=16, fractions=(1, 0, 0),
                        progress=False)
    fast = next(iter(D.BatchLoader(ds.x, ds.y, 6)))[0]
    text = next(iter(D.textbook_loader(ds, "train", batch_size=6, num_workers=0)))[0]
    torch.testing.assert_close(fast, text, atol=1e-6, rtol=0)


def test_textbook_augmented_with_workers(small_ds):
    loader = D.textbook_loader(small_ds, "train", batch_size=12, augment="color", num_workers=1,
                               shuffle=True, seed=3, resize=40)
    assert loader.persistent_workers and loader.num_workers == 1
    batches = list(loader)
    xb, yb = batches[0]
    assert xb.shape == (12, 3, 40, 40) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == [0] * 12 + [1] * 12 + [2] * 12
    plain = D.textbook_loader(small_ds, "train", batch_size=12, num_workers=0, resize=40)
    assert not torch.allclose(xb, next(iter(plain))[0])


# --------------------------------------------------------------------------- real EuroSAT


@pytest.fixture(scope="module")
def real_ds(real_eurosat_zip, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("eurosat-real") / "data"
    t0 = time.perf_counter()
    ds = D.load_dataset(data_dir, source=real_eurosat_zip, progress=False)
    return ds, data_dir, time.perf_counter() - t0


@pytest.mark.realdata
def test_real_extraction_and_verification(real_ds):
    ds, data_dir, _ = real_ds
    assert ds.root == data_dir / "eurosat" / "2750"
    assert ds.classes == list(D.EUROSAT_CLASSES) and len(ds) == 27_000
    counts = np.bincount(ds.y.numpy(), minlength=10).tolist()
    assert dict(zip(ds.classes, counts, strict=True)) == D.EUROSAT_COUNTS
    assert _no_temp_dirs(data_dir)


@pytest.mark.realdata
def test_real_split_sizes(real_ds):
    ds = real_ds[0]
    assert [len(ds.indices(s)) for s in D.SPLITS] == [16_200, 5_400, 5_400]
    assert ds.class_counts("train") == [int(0.6 * D.EUROSAT_COUNTS[c]) for c in ds.classes]


@pytest.mark.realdata
def test_real_cache_content(real_ds):
    ds = real_ds[0]
    assert tuple(ds.x.shape) == (27_000, 3, 64, 64) and ds.x.dtype == torch.uint8
    sub = ds.x[::9].float() / 255
    torch.testing.assert_close(sub.mean(dim=(0, 2, 3)), torch.tensor(D.EUROSAT_MEAN),
                               atol=3e-3, rtol=0)


@pytest.mark.realdata
def test_real_second_load_uses_marker_and_cache(real_ds, real_eurosat_zip, monkeypatch):
    ds, data_dir, _ = real_ds

    def forbidden(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(D, "_check_image", forbidden)
    monkeypatch.setattr(D, "_decode_resized", forbidden)
    again = D.load_dataset(data_dir, source=real_eurosat_zip, progress=False)
    assert again.cache_path == ds.cache_path and torch.equal(again.x[:100], ds.x[:100])
    assert again.split_csv.read_bytes() == ds.split_csv.read_bytes()
    assert D.prepare_eurosat(data_dir, progress=False) == ds.root


def test_nothing_at_import_time():
    import subprocess
    import sys

    code = ("import sys, hw2lib.data; "
            "assert 'torchvision' not in sys.modules and 'PIL' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('torchvision', 'PIL')))")
    env = dict(os.environ, PYTHONPATH=str(Path(D.__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
