"""hw2lib.study: subsets, JSON, experiment configs, run_experiment's skip/resume, summaries, cRT."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hw2lib import data as D
from hw2lib import study as S


def test_subsample_per_class_is_stratified_seeded_and_capped():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    keep = S.subsample_per_class(labels, 5, seed=3)
    assert np.bincount(labels[keep]).tolist() == [5, 3, 5]  # a class smaller than the cap stays whole
    assert np.array_equal(keep, np.sort(keep)) and len(set(keep)) == len(keep)
    assert np.array_equal(keep, S.subsample_per_class(labels, 5, seed=3))
    assert not np.array_equal(keep, S.subsample_per_class(labels, 5, seed=4))
    assert np.array_equal(S.subsample_per_class(labels, None), np.arange(20))
    with pytest.raises(ValueError, match="positive number"):
        S.subsample_per_class(labels, 0)


def test_write_json_is_strict_json_with_nan_as_null(tmp_path):
    p = tmp_path / "sub" / "r.json"
    S.write_json(p, {"a": float("nan"), "b": [np.float32(0.5), float("inf")], "c": np.arange(2),
                     "d": tmp_path})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [0.5, None], "c": [0, 1], "d": str(tmp_path)}
    assert not list(p.parent.glob("*.tmp"))
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        S.write_json(p, {"x": object()})


def test_experiment_config_scales_the_studys_schedule():
    ms = S.experiment_config({"name": "m", "schedule": "multistep"}, epochs=200, seed=0)
    assert ms["milestones"] == [80, 120, 160] and ms["gamma"] == 0.2  # the study's own
    assert S.experiment_config({"name": "m", "schedule": "multistep"}, epochs=10,
                               seed=0)["milestones"] == [4, 6, 8]
    assert S.experiment_config({"name": "m", "schedule": "multistep"}, epochs=4,
                               seed=0)["milestones"] == [2, 3]  # 1.6, 2.4, 3.2: no double drop
    ex = S.experiment_config({"name": "e", "schedule": "exponential"}, epochs=20, seed=0)
    assert math.isclose(ex["gamma"] ** 20, 0.01)  # ÷100 over the run
    given = S.experiment_config({"name": "g", "schedule": "multistep", "milestones": [3],
                                 "gamma": 0.5}, epochs=10, seed=0)
    assert given["milestones"] == [3] and given["gamma"] == 0.5
    with pytest.raises(ValueError, match=r"unknown keys \['lr_typo'\]"):
        S.experiment_config({"name": "x", "lr_typo": 1}, epochs=1, seed=0)


def test_b_experiment_catalogue_and_ablation_cells():
    assert S.b_experiment("resnext18")["model"] == "resnext18"
    with pytest.raises(ValueError, match="Known: resnet18, resnet34"):
        S.b_experiment("resnet19")
    for (aug, sched), name in S.ABLATION_CELLS.items():
        spec = S.B_EXPERIMENTS[name]
        assert spec.get("augment", "basic") == aug and spec.get("schedule", "none") == \
            {"constant": "none"}.get(sched, sched)
    for name in S.B_REFERENCE.values():
        assert name in S.REFERENCE


def _rec(name, seed, val, test):
    cfg = S.experiment_config({"name": name}, epochs=1, seed=seed)
    return {"config": cfg, "params": 10, "val_acc": val, "test_acc": test, "val_bal_acc": val,
            "test_bal_acc": test, "wall_seconds": 2.0}


def test_summarize_mean_and_std_over_seeds():
    rows = S.summarize([_rec("a", 0, 0.5, 0.4), _rec("a", 1, 0.7, 0.6), _rec("b", 0, 0.9, 0.8)])
    a, b = rows
    assert (a["name"], a["seeds"], b["seeds"]) == ("a", 2, 1)
    assert math.isclose(a["val_acc"], 0.6) and math.isclose(a["val_acc_std"], np.std([.5, .7], ddof=1))
    assert b["val_acc_std"] == 0.0 and a["wall_s"] == 4.0


def test_b_findings_state_differences_with_error_bars():
    recs = [_rec("resnet18", 0, 0.80, 0.8), _rec("resnet50", 0, 0.75, 0.7),
            *[_rec("sched_constant", s, v, v) for s, v in enumerate((0.80, 0.82, 0.84))],
            *[_rec("sched_multistep", s, v, v) for s, v in enumerate((0.90, 0.91, 0.92))],
            *[_rec("sched_cosine", s, v, v) for s, v in enumerate((0.79, 0.83, 0.87))]]
    found = S.b_findings(S.summarize(recs))
    assert len(found) == 3  # resnet50/resnet18, multistep/constant, cosine/constant; rest absent
    depth, multistep, cosine = found
    assert depth.startswith("depth: ResNet-50 vs ResNet-18") and "-5.0 points" in depth
    assert "one seed" in depth
    # multistep: +9 points; se = sqrt(0.02²/3 + 0.01²/3) = 1.29 points → beyond 2 se
    assert "+9.0 points ± 1.3 (n = 3/3 seeds; beyond 2 standard errors)" in multistep
    # cosine: +1 point; se = sqrt(0.04²/3 + 0.02²/3) = 2.58 points → within noise
    assert "+1.0 points ± 2.6" in cosine and "within noise" in cosine
    for _, a, b in S.B_COMPARISONS:
        assert a in S.B_EXPERIMENTS and b in S.B_EXPERIMENTS


def test_load_backbone_offline_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    from hw2lib.models import WeightsUnavailable

    def offline(*a, **k):
        raise OSError("no network here")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable):
        S.load_backbone("resnet18", 10, pretrained=True)
    with pytest.warns(UserWarning, match="RANDOM INITIALIZATION"):
        model, warn = S.load_backbone("resnet18", 10, pretrained=True, allow_random_init=True)
    assert "RANDOM INITIALIZATION" in warn and model.fc.out_features == 10
    assert S.load_backbone("resnet18", 4, pretrained=False)[1] is None


def test_notebooks_show_the_random_init_warning_once(monkeypatch, tmp_path):
    """In a notebook the warning is a box (show_warning), so notebook_setup mutes its stderr copy."""
    import warnings

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        S.load_backbone("resnet18", 3, pretrained=True, allow_random_init=True)
        assert len(seen) == 1
        S.notebook_setup(tmp_path / "run", seed=0, device="cpu")
        _, msg = S.load_backbone("resnet18", 3, pretrained=True, allow_random_init=True)
        assert len(seen) == 1 and "RANDOM INITIALIZATION" in msg
        warnings.warn("other warnings still show", UserWarning, stacklevel=1)
        assert len(seen) == 2
    with pytest.raises(ValueError, match="figure_format must be 'png' or 'jpeg'"):
        S.notebook_setup(tmp_path / "run", seed=0, device="cpu", figure_format="gif")


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory, make_imagefolder):
    base = tmp_path_factory.mktemp("study-ds")
    root = make_imagefolder(base / "images", ("a", "b", "c"), per_class=10, size=32)
    return D.load_dataset(base / "data", image_folder=root, image_size=32, progress=False)


def _tiny_cfg(**kw):
    return S.experiment_config({"name": "tiny", "model": "resnet18", "augment": "basic", **kw},
                               epochs=2, seed=0, batch_size=8)


def test_run_experiment_writes_results_and_skips_a_finished_run(tiny_ds, tmp_path, monkeypatch):
    idx = S.split_indices(tiny_ds)
    cfg = _tiny_cfg()
    out = S.run_experiment(cfg, tiny_ds, tmp_path / "r", train_idx=idx["train"],
                           val_idx=idx["val"], test_idx=idx["test"], progress=False)
    assert out["epochs_run"] == 2 and 1 <= out["best_epoch"] <= 2
    assert 0.0 <= out["val_acc"] <= 1.0 and len(out["test_per_class"]) == 3
    preds = S.load_predictions(tmp_path / "r")
    assert preds["val_logits"].shape == (len(idx["val"]), 3)
    assert np.array_equal(preds["test_targets"], tiny_ds.y[idx["test"]].numpy())
    model, saved_cfg = S.load_trained(tmp_path / "r" / "best.pt")
    assert saved_cfg == cfg and not model.training

    import hw2lib.engine as E

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(E, "fit", no_training)
    again = S.run_experiment(cfg, tiny_ds, tmp_path / "r", train_idx=idx["train"],
                             val_idx=idx["val"], test_idx=idx["test"], progress=False)
    assert again == json.loads((tmp_path / "r" / "result.json").read_text())
    with pytest.raises(AssertionError, match="trained again"):  # a changed config trains anew
        S.run_experiment(_tiny_cfg(lr=0.01), tiny_ds, tmp_path / "r", train_idx=idx["train"],
                         val_idx=idx["val"], test_idx=idx["test"], progress=False)


def test_retrain_classifier_changes_only_the_head(tiny_ds):
    from hw2lib.models import build_model

    idx = S.split_indices(tiny_ds)
    model = build_model("resnet18", 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    S.retrain_classifier(model, tiny_ds, idx["train"], _tiny_cfg(), "cpu", epochs=2,
                         batch_size=8)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    assert not model.training
