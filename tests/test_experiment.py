"""hw2lib.train.experiment: recipes, run identity (reuse, new run, force), predictions, summaries."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hw2lib import data as D
from hw2lib.core import io
from hw2lib.train import experiment as X
from hw2lib.train.recipes import resolve
from tests.nets import run_record


def test_identity_hash_is_canonical_and_sensitive():
    cfg = resolve({"name": "a"}, epochs=2, seed=0)
    data = {"split_file_sha256": "ab", "train_rows": "cd"}
    a = X.run_identity(cfg, data, weights=None, max_steps=None)
    b = X.run_identity(resolve(dict(reversed(list(cfg.items())))),
                       dict(reversed(list(data.items()))), weights=None, max_steps=None)
    assert X.identity_hash(a) == X.identity_hash(b)  # key order does not matter
    relabelled = X.run_identity(cfg.replace(group="other", label="x", name="b"), data,
                                weights=None, max_steps=None)
    assert X.identity_hash(relabelled) == X.identity_hash(a)  # name and labels are not identity
    for changed in (X.run_identity(cfg.replace(lr=0.02), data, weights=None, max_steps=None),
                    X.run_identity(cfg, {**data, "train_rows": "ce"}, weights=None, max_steps=None),
                    X.run_identity(cfg, data, weights={"file": "w.pt", "sha256": "1"},
                                   max_steps=None),
                    X.run_identity(cfg, data, weights=None, max_steps=3)):
        assert X.identity_hash(changed) != X.identity_hash(a)
    folder = X.run_folder("/r", cfg, a)
    assert folder.name == f"a-s0-{X.identity_hash(a)[:8]}"


def test_load_backbone_offline_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    from hw2lib.nets.models import WeightsUnavailable

    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("no network here")))
    with pytest.raises(WeightsUnavailable):
        X.load_backbone("resnet18", 10, pretrained=True)
    with pytest.warns(UserWarning, match="RANDOM INITIALIZATION"):
        model, warn = X.load_backbone("resnet18", 10, pretrained=True, allow_random_init=True)
    assert "RANDOM INITIALIZATION" in warn and model.fc.out_features == 10
    assert X.load_backbone("resnet18", 4, pretrained=False)[1] is None


def _cfg(**kw):
    return resolve({"name": "tiny", "model": "resnet18", "augment": "basic",
                    **{k: v for k, v in kw.items() if k != "epochs"}},
                   epochs=kw.get("epochs", 2), seed=0, batch_size=8)


def _run(ds, root, cfg, idx=None, **kw):
    idx = idx or D.split_indices(ds)
    kw.setdefault("device", "cpu")  # pinned: a GPU box's default device is CUDA (bf16)
    return X.run_experiment(cfg, ds, root, train_idx=idx["train"], val_idx=idx["val"],
                            test_idx=idx["test"], progress=False, **kw)


def _count_fits(monkeypatch):
    """The epochs of every `fit` call run_experiment makes (its recipe's)."""
    calls = []
    real = X.fit

    def counting(model, data, recipe, **k):
        calls.append(recipe.epochs)
        return real(model, data, recipe, **k)

    monkeypatch.setattr(X, "fit", counting)
    return calls


def test_same_identity_reuses_and_a_changed_setting_trains_a_new_run(small_ds, tmp_path,
                                                                     monkeypatch):
    fits = _count_fits(monkeypatch)
    first = _run(small_ds, tmp_path, _cfg())
    assert fits == [2] and not first["reused"] and first["epochs_run"] == 2
    folder = tmp_path / f"tiny-s0-{first['run_id']}"
    assert first["run_folder"] == str(folder)
    assert io.read_json(folder / "identity.json") == first["identity"]
    assert 0.0 <= first["val_acc"] <= 1.0 and len(first["test_per_class"]) == 3
    preds = X.load_predictions(folder)
    assert np.array_equal(preds["test_targets"], small_ds.y[D.split_indices(small_ds)["test"]].numpy())
    model, saved_cfg = X.load_trained(folder / "best.pt")
    assert saved_cfg == _cfg() and not model.training

    again = _run(small_ds, tmp_path, _cfg())  # same identity: reused, not trained
    assert fits == [2] and again["reused"] and again["val_acc"] == first["val_acc"]

    # a changed hyperparameter: a new run in its own folder (no "cannot resume" error)
    other = _run(small_ds, tmp_path, _cfg(lr=0.02))
    assert fits == [2, 2] and other["run_id"] != first["run_id"] and not other["reused"]
    assert other["identity"]["recipe"]["lr"] == 0.02
    # fewer epochs: a new 1-epoch run, not the 2-epoch one
    short = _run(small_ds, tmp_path, _cfg(epochs=1))
    assert fits == [2, 2, 1] and short["epochs_run"] == 1 and short["config"]["epochs"] == 1
    # other data (a subset cap): a new run
    idx = D.split_indices(small_ds, train_per_class=3)
    sub = _run(small_ds, tmp_path, _cfg(), idx=idx)
    assert fits == [2, 2, 1, 2] and sub["identity"]["data"]["n_train"] == 9
    # a step cap is part of the identity
    capped = _run(small_ds, tmp_path, _cfg(), max_steps=1)
    assert fits[-1] == 2 and len(fits) == 5 and capped["identity"]["max_steps"] == 1
    # force retrains the same identity in the same folder
    forced = _run(small_ds, tmp_path, _cfg(), force=True)
    assert len(fits) == 6 and forced["run_id"] == first["run_id"] and not forced["reused"]
    assert len(list(tmp_path.iterdir())) == 5


def test_weights_file_hash_is_part_of_the_identity(small_ds, tmp_path):
    from hw2lib.nets.models import build_model

    w = tmp_path / "w.pt"
    torch.save(build_model("resnet18", 3).state_dict(), w)
    a = _run(small_ds, tmp_path / "r", _cfg(epochs=1), weights=w)
    assert a["identity"]["weights"] == {"file": "w.pt", "sha256": io.sha256_file(w)[:16]}
    state = build_model("resnet18", 3).state_dict()
    state["fc.bias"] += 1.0
    torch.save(state, w)  # other weights, same name
    b = _run(small_ds, tmp_path / "r", _cfg(epochs=1), weights=w)
    assert b["run_id"] != a["run_id"] and not b["reused"]


def test_a_corrupt_result_is_trained_again_with_a_warning(small_ds, tmp_path):
    first = _run(small_ds, tmp_path, _cfg(epochs=1))
    (tmp_path / f"tiny-s0-{first['run_id']}" / "result.json").write_text("{trunc")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = _run(small_ds, tmp_path, _cfg(epochs=1))
    assert not again["reused"] and again["run_id"] == first["run_id"]
    assert any("is corrupt" in str(w.message) for w in seen)


def _rec(name, seed, val, test, n=100):
    return run_record(resolve({"name": name}, epochs=1, seed=seed), val, test, n=n)


def test_summarize_mean_and_std_over_seeds_with_run_ids():
    rows = X.summarize([_rec("a", 0, 0.5, 0.4), _rec("a", 1, 0.7, 0.6), _rec("b", 0, 0.9, 0.8)])
    a, b = rows
    assert (a["name"], a["seeds"], b["seeds"]) == ("a", 2, 1)
    assert math.isclose(a["val_acc"], 0.6)
    assert math.isclose(a["val_acc_std"], np.std([.5, .7], ddof=1))
    assert b["val_acc_std"] == 0.0 and a["wall_s"] == 4.0
    assert a["run_ids"] == "a-0 a-1" and b["test_n"] == 100 and b["val_n"] == 100


def test_a_tta_run_keeps_the_plain_forward_beside_the_8_view_average(small_ds, tmp_path):
    """With the recipe's `tta`, the saved logits are the 8-view average and the plain forward of
    the same best.pt is kept as `<split>_logits_no_tta`, scored as `<split>_acc_no_tta`."""
    from hw2lib.train import engine as E

    res = _run(small_ds, tmp_path, _cfg(tta=True, augment="d4"))
    preds = X.load_predictions(res["run_folder"])
    model, cfg = X.load_trained(Path(res["run_folder"]) / "best.pt")
    idx = D.split_indices(small_ds)
    for split in ("val", "test"):
        loader = X.make_loader(small_ds, idx[split], cfg, "cpu", train=False)
        plain, targets = E.predict(model, loader)
        tta, _, _ = E.predict_tta(model, loader)
        np.testing.assert_allclose(preds[f"{split}_logits_no_tta"], plain.numpy(), rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(preds[f"{split}_logits"], tta.numpy(), rtol=1e-5, atol=1e-5)
        y = targets.numpy()
        assert res[f"{split}_acc_no_tta"] == (plain.numpy().argmax(1) == y).mean()
        assert res[f"{split}_acc"] == (tta.numpy().argmax(1) == y).mean()

