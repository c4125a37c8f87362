"""hw2lib.data.augment and hw2lib.data.loaders: whole-batch augmentation (its draws and maps, composed
by tests.augment_reference), BatchLoader, the textbook DataLoader.

Synthetic ImageFolders (conftest and the fixtures here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw2lib import data as D
from hw2lib.data import augment
from tests.augment_reference import augment_batch, crop_flip

# --------------------------------------------------------------------------- augmentation


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_augment_none_is_identity_and_presets_checked():
    x = torch.rand(4, 3, 8, 8)
    assert augment_batch(x, "none", _gen()) is x
    with pytest.raises(ValueError, match="'none', 'basic', 'color'"):
        augment_batch(x, "fancy", _gen())
    with pytest.raises(ValueError, match="'none', 'basic', 'color'"):
        D.BatchLoader(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2), augment="heavy")


def test_basic_without_padding_is_flip_or_not():
    x = torch.rand(32, 3, 8, 8)
    out = augment_batch(x, "basic", _gen(), padding=0)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and 0 < sum(flipped) < 32


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
    out = augment_batch(x, "basic", _gen(1), padding=2)
    matches = [_match_crop(o, img[0], 2) for o in out]
    assert all(m is not None for m in matches)
    assert len(set(matches)) > 4  # per-sample parameters, not one per batch
    again = augment_batch(x, "basic", _gen(1), padding=2)
    assert torch.equal(out, again)  # the generator decides everything


def test_color_jitter_varies_per_sample_and_stays_in_range():
    img = torch.rand(1, 3, 12, 12) * 0.6 + 0.2
    x = img.repeat(16, 1, 1, 1)
    out = augment_batch(x, "color", _gen(2), padding=0)
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
    mat, shift = augment.color_matrix(torch.tensor([fb]), torch.tensor([fc]), torch.tensor([fs]),
                                 gray_mean.view(1))
    out = augment.apply_affine(x, mat, shift).clamp(0, 1)
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
        ref = augment_batch(x[idx].float() / 255, "color", g)
        ref = (ref - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(xb, ref, atol=1e-4, rtol=1e-4)
        assert torch.equal(yb, y[idx])


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
    with pytest.warns(D.DataWarning, match="resized 6 images"):
        ds = D.load_dataset(tmp_path / "data", image_folder=root, image_size=16,
                            fractions=(1, 0, 0), progress=False)
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


def test_d4_draws_all_eight_symmetries_of_the_square():
    """'d4' = crop + one of the 8 symmetries, each equally likely; no padding → exactly one of
    the 8 dihedral images of the input."""
    img = torch.arange(5 * 5, dtype=torch.float32).view(1, 1, 5, 5)
    views = [torch.rot90(v, k, (2, 3)) for v in (img, img.flip(3)) for k in range(4)]
    x = img.expand(4000, 1, 5, 5).contiguous()
    out = crop_flip(x, torch.Generator().manual_seed(0), 0, True, transpose=True)
    which = torch.stack([(out == v).flatten(1).all(1) for v in views], 1)
    assert which.sum(1).eq(1).all()  # every output is exactly one symmetry
    freq = which.float().mean(0)
    assert (freq - 1 / 8).abs().max() < 0.03, freq
    with pytest.raises(ValueError, match="square"):
        crop_flip(torch.zeros(2, 1, 4, 6), torch.Generator(), 0, True, transpose=True)


def test_d4_loader_keeps_other_presets_streams_and_matches_augment_batch(small_ds):
    x, y = small_ds.tensors("train")
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(len(y), generator=g)
    for k, (xb, _) in enumerate(D.BatchLoader(x, y, 16, shuffle=True, augment="d4", seed=3,
                                               mean=mean, std=std)):
        idx = order[k * 16:(k + 1) * 16]
        ref = augment_batch(x[idx].float() / 255, "d4", g)
        ref = (ref - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(xb, ref, atol=1e-5, rtol=1e-5)
    # 'basic' draws nothing for the transposition: its batches are those of before d4 existed
    b1 = next(iter(D.BatchLoader(x, y, 16, shuffle=True, augment="basic", seed=3)))[0]
    g = torch.Generator().manual_seed(3)
    idx = torch.randperm(len(y), generator=g)[:16]
    ref = augment_batch(x[idx].float() / 255, "basic", g)
    ref = (ref - torch.tensor(D.EUROSAT_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        D.EUROSAT_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(b1, ref, atol=1e-5, rtol=1e-5)


def test_textbook_d4_transform_gives_symmetries(monkeypatch):
    from PIL import Image

    from hw2lib.data.loaders import _textbook_transform

    monkeypatch.setattr(augment, "PADDING", 0)  # no crop: exactly one of the 8 symmetries
    arr = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    t = _textbook_transform("d4", 8, mean=(0, 0, 0), std=(1, 1, 1))
    base = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    views = [torch.rot90(v, k, (1, 2)) for v in (base, base.flip(2)) for k in range(4)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        out = t(Image.fromarray(arr))
        hits = [i for i, v in enumerate(views) if torch.allclose(out, v)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == set(range(8))
