"""hw2lib.data.splits: the split file, per-class subsets, the long tail.

Synthetic ImageFolders (conftest and the fixtures here).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from hw2lib import data as D
from hw2lib.data import splits

# --------------------------------------------------------------------------- splits


def test_split_sizes():
    assert splits._split_sizes(3000, (0.6, 0.2, 0.2)) == [1800, 600, 600]
    assert splits._split_sizes(2500, (0.6, 0.2, 0.2)) == [1500, 500, 500]
    assert splits._split_sizes(2000, (0.6, 0.2, 0.2)) == [1200, 400, 400]
    assert splits._split_sizes(12, (0.6, 0.2, 0.2)) == [7, 2, 3]
    for n in range(3, 12):  # small classes keep at least one image in every split
        sizes = splits._split_sizes(n, (0.6, 0.2, 0.2))
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
            sizes = splits._split_sizes(n, (0.6, 0.2, 0.2))
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


# --------------------------------------------------------------------------- empty splits


def test_class_missing_from_a_split_is_a_warning_naming_it(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "img", ("a", "b", "c"), counts=[1, 2, 5], size=8)
    with pytest.warns(D.DataWarning) as rec:
        ds = D.load_dataset(tmp_path / "data", image_folder=root, image_size=8, progress=False)
    msg = " | ".join(str(w.message) for w in rec)
    assert "the val split has no image of a (1 image), b (2 images)" in msg
    assert "the test split has no image of a (1 image)" in msg and str(ds.split_csv) in msg
    assert "at least 3 images" in msg and "c (" not in msg
    assert ds.class_counts("val") == [0, 0, 1]


def test_all_classes_too_small_is_an_error(tmp_path, make_imagefolder):
    root = make_imagefolder(tmp_path / "img", ("a", "b"), counts=[1, 2], size=8)
    with pytest.raises(D.DataError, match="the val split is empty") as err:
        D.load_dataset(tmp_path / "data", image_folder=root, image_size=8, progress=False)
    assert "fewer than 3 images (a, b)" in str(err.value) and "fraction to 0" in str(err.value)
    ok = D.load_dataset(tmp_path / "data", image_folder=root, image_size=8, progress=False,
                        fractions=(1, 0, 0))  # no val or test asked for: nothing to say
    assert ok.class_counts("train") == [1, 2]


def test_hand_emptied_split_is_an_error(small_folder, tmp_path):
    data_dir = tmp_path / "data"
    ds = D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    lines = ds.split_csv.read_text().splitlines()
    body = [ln.replace(",test", ",train") for ln in lines[1:]]
    ds.split_csv.write_text("\n".join([lines[0]] + body) + "\n")
    with pytest.raises(D.DataError, match="the test split is empty") as err:
        D.load_dataset(data_dir, image_folder=small_folder, image_size=16, progress=False)
    assert str(ds.split_csv) in str(err.value) and "puts no image there" in str(err.value)


def test_split_sizes_of_tiny_classes():
    assert splits._split_sizes(1, (0.6, 0.2, 0.2)) == [1, 0, 0]
    assert splits._split_sizes(2, (0.6, 0.2, 0.2)) == [1, 0, 1]
    assert splits._split_sizes(5, (1.0, 0.0, 0.0)) == [5, 0, 0]


# --------------------------------------------------------------------------- per-class subsets


def test_subsample_per_class_caps_each_class_seeded():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    np.random.default_rng(1).shuffle(labels)
    pos = D.subsample_per_class(labels, 4, seed=2)
    assert np.bincount(labels[pos]).tolist() == [4, 3, 4]
    assert (np.diff(pos) > 0).all() and pos.dtype.kind == "i"
    assert np.array_equal(pos, D.subsample_per_class(labels, 4, seed=2))
    assert not np.array_equal(pos, D.subsample_per_class(labels, 4, seed=3))
    assert np.array_equal(D.subsample_per_class(labels, None), np.arange(20))
    assert np.array_equal(D.subsample_per_class(labels, 100), np.arange(20))
    assert D.subsample_per_class(np.zeros(0, dtype=np.int64), 3).tolist() == []
    for bad in (0, -1):
        with pytest.raises(ValueError, match="per_class must be a positive number"):
            D.subsample_per_class(labels, bad)


def test_split_indices_caps_each_split(small_ds):
    full = D.split_indices(small_ds)
    for s in D.SPLITS:
        assert np.array_equal(full[s], small_ds.indices(s))
    capped = D.split_indices(small_ds, train_per_class=5, test_per_class=2, seed=1)
    assert np.bincount(small_ds.y[capped["train"]].numpy()).tolist() == [5, 5, 5]
    assert np.array_equal(capped["val"], small_ds.indices("val"))
    assert np.bincount(small_ds.y[capped["test"]].numpy()).tolist() == [2, 2, 2]
    assert all((small_ds.split[capped[s]] == s).all() for s in D.SPLITS)
    again = D.split_indices(small_ds, train_per_class=5, test_per_class=2, seed=1)
    assert all(np.array_equal(capped[s], again[s]) for s in D.SPLITS)
