"""hw2lib.data.cache: the decoded uint8 cache, the Dataset, and real EuroSAT end to end.

Synthetic ImageFolders (conftest and the fixtures here); the real archive for the `realdata` tests.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hw2lib import data as D
from hw2lib.data import cache, folders, sources


def _jpeg_bytes(size=16, color=(100, 150, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="JPEG")
    return buf.getvalue()


def _no_temp_dirs(data_dir: Path) -> bool:
    return not list(data_dir.glob(".eurosat-extract-*"))


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
    real = cache._decode_resized
    calls = []

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(cache, "_decode_resized", counting)
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
    with pytest.warns(D.DataWarning, match="resized 12 images of other sizes to 24×24"):
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
    with pytest.warns(D.DataWarning, match="resized 7 images .*; repeated the one channel of 1"):
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


# --------------------------------------------------------------------------- real EuroSAT


@pytest.fixture
def real_ds(real_eurosat):
    return real_eurosat


@pytest.mark.realdata
def test_real_extraction_and_verification(real_ds):
    ds, data_dir = real_ds
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
    ds, data_dir = real_ds

    def forbidden(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folders, "check_image", forbidden)
    monkeypatch.setattr(sources, "check_image", forbidden)
    monkeypatch.setattr(cache, "_decode_resized", forbidden)
    again = D.load_dataset(data_dir, source=real_eurosat_zip, progress=False)
    assert again.cache_path == ds.cache_path and torch.equal(again.x[:100], ds.x[:100])
    assert again.split_csv.read_bytes() == ds.split_csv.read_bytes()
    assert D.prepare_eurosat(data_dir, progress=False) == ds.root


# --------------------------------------------------------------------------- conversions


def test_conversions_are_counted_in_one_warning(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "img", ("a", "b"), per_class=3, size=16, ext=".png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 40)).save(root / "a" / "rgba.png")
    Image.new("RGBA", (8, 8), (10, 20, 30, 40)).save(root / "b" / "rgba-small.png")
    Image.new("L", (16, 16), 77).save(root / "b" / "gray.png")
    Image.new("RGB", (20, 12), (1, 2, 3)).save(root / "b" / "wide.png")
    data_dir = tmp_path / "data"
    with pytest.warns(D.DataWarning) as rec:
        ds = D.load_dataset(data_dir, image_folder=root, image_size=16, progress=False)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1, msgs
    assert msgs[0] == (f"images in {root}: resized 2 images of other sizes to 16×16; dropped the "
                       "alpha channel (transparency) of 2 images; repeated the one channel of "
                       "1 image (grayscale) as RGB")
    assert ds.conversions == {"resized": 2, "alpha": 2, "gray": 1}
    assert (ds.x[ds.paths.index("b/gray.png")] == 77).all()
    assert ds.x[ds.paths.index("a/rgba.png")][:, 0, 0].tolist() == [10, 20, 30]
    with pytest.warns(D.DataWarning, match="resized 2 images"):  # said again from the cache
        again = D.load_dataset(data_dir, image_folder=root, image_size=16, progress=False)
    assert again.cache_path == ds.cache_path and again.conversions == ds.conversions


def test_no_conversion_no_warning(small_folder, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = D.load_dataset(tmp_path / "data", image_folder=small_folder, image_size=16,
                            progress=False)
    assert ds.conversions == {}


def test_bad_arguments_are_data_errors_and_value_errors(small_folder, tmp_path):
    for kw in ({"image_size": 0}, {"image_size": -4}, {"image_size": 2.5},
               {"source": small_folder}, {"fractions": (0.5, 0.5, 0.5)}):
        with pytest.raises(D.DataArgumentError) as err:
            D.load_dataset(tmp_path / "data", image_folder=small_folder, progress=False, **kw)
        assert isinstance(err.value, D.DataError) and isinstance(err.value, ValueError)
    store = tmp_path / "a-file"
    store.write_text("not a folder")
    with pytest.raises(D.DataError, match="is a file, not a folder") as err:
        D.load_dataset(store, image_folder=small_folder, progress=False)
    assert str(store) in str(err.value)
