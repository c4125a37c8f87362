"""Per-task logic moved out of the notebooks (task_a, task_b, task_c) and the uncertainty of a
finding (stats), on synthetic values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hw2lib import stats, task_a, task_b, task_c
from hw2lib.experiment import experiment_config, summarize
from hw2lib.reference import REFERENCE


def _rec(name, seed, val, test=None, n=1000):
    cfg = experiment_config(task_b.experiment(name), epochs=1, seed=seed)
    test = val if test is None else test
    return {"config": cfg, "params": 10, "val_acc": val, "test_acc": test, "val_bal_acc": val,
            "test_bal_acc": test, "wall_seconds": 2.0, "run_id": f"id{seed}", "val_n": n,
            "test_n": n}


def test_stats_interval_from_seeds_and_from_sample_size():
    a = {"val_acc": 0.90, "val_acc_std": 0.01, "seeds": 3}
    b = {"val_acc": 0.81, "val_acc_std": 0.02, "seeds": 3}
    diff, half, how = stats.diff_interval(a, b)
    assert math.isclose(diff, 0.09) and "3/3 seeds" in how
    assert math.isclose(half, 1.96 * math.sqrt(0.01**2 / 3 + 0.02**2 / 3))
    one = {"val_acc": 0.80, "seeds": 1, "val_n": 400}
    two = {"val_acc": 0.78, "seeds": 1, "val_n": 400}
    diff, half, how = stats.diff_interval(one, two)
    assert math.isclose(half, 1.96 * math.sqrt(.8 * .2 / 400 + .78 * .22 / 400))
    assert "400 val images" in how
    assert "not distinguishable at this budget" in stats.describe("x", one, two)
    assert stats.describe("x", a, b).endswith("better")
    assert stats.describe("x", b, a).endswith("worse")
    assert "no interval" in stats.describe("x", {"val_acc": .5}, {"val_acc": .4})


def test_b_catalogue_ablation_cells_and_references():
    assert task_b.experiment("resnext18")["model"] == "resnext18"
    with pytest.raises(ValueError, match="Known: resnet18, resnet34"):
        task_b.experiment("resnet19")
    for (aug, sched), name in task_b.ABLATION_CELLS.items():
        spec = task_b.EXPERIMENTS[name]
        assert spec.get("augment", "basic") == aug
        assert spec.get("schedule", "none") == {"constant": "none"}.get(sched, sched)
    for key in task_b.REFERENCE_KEY.values():
        assert key in REFERENCE
    for _, a, b in task_b.COMPARISONS:
        assert a in task_b.EXPERIMENTS and b in task_b.EXPERIMENTS


def test_b_configs_seed_the_ablation_and_give_sgd_its_lr():
    cfgs = task_b.configs(["resnet18", "sched_constant"], seeds=[0], ablation_seeds=[0, 1, 2],
                          epochs=5, batch_size=32, lr_sgd=0.07)
    assert [(c["name"], c["seed"]) for c in cfgs] == [
        ("resnet18", 0), ("sched_constant", 0), ("sched_constant", 1), ("sched_constant", 2)]
    assert cfgs[0]["lr"] == 0.07 and cfgs[1]["lr"] == 1e-3 and cfgs[1]["optimizer"] == "adam"


def test_b_findings_tables_and_headline():
    recs = [_rec("resnet18", 0, 0.80), _rec("resnet50", 0, 0.70),
            *[_rec("sched_constant", s, v) for s, v in enumerate((0.80, 0.82, 0.84))],
            *[_rec("sched_multistep", s, v) for s, v in enumerate((0.90, 0.91, 0.92))],
            *[_rec("abl_none_constant", s, v) for s, v in enumerate((0.79, 0.80, 0.81))]]
    rows = summarize(recs)
    found = task_b.findings(rows)
    depth = next(f for f in found if f.startswith("depth: ResNet-50"))
    assert "-10.0 points" in depth and "one seed; interval from 1,000 val images" in depth
    assert depth.endswith("worse")  # ±3.8 points at n=1000: a 10-point drop is beyond it
    ms = next(f for f in found if f.startswith("LR schedule: MultiStep vs constant (Adam"))
    assert "+9.0 points ± 2.5 (95 %, n = 3/3 seeds): better" in ms
    aug = next(f for f in found if f.startswith("augmentation at constant LR"))
    assert "+2.0 points" in aug and "not distinguishable at this budget" in aug
    both = next(f for f in found if f.startswith("both (augmentation + MultiStep)"))
    assert "+11.0 points" in both
    table = task_b.ablation_table(rows)
    assert table.loc["crop + flip + colour", "MultiStep LR"] == "0.9100 ± 0.0100 (n=3)"
    assert table.loc["no augmentation", "MultiStep LR"] == "not run"
    shown = task_b.results_table(rows)
    assert shown.loc["resnet18", "HW2 report"] == "0.8000"
    assert shown.loc["resnet50", "HW2 report"] == "—"
    assert shown.loc["sched_constant", "run ids"] == "id0 id1 id2"
    heads = {h["name"]: h for h in task_b.headline_rows(rows)}
    assert heads["B resnet18: val acc"]["reference"] == 0.80
    assert heads["B resnet18: val acc"]["run_id"] == "id0"


def _logits(y, k, correct):
    """Logits whose argmax is right exactly where `correct` is True (else class (y+1) % k)."""
    lg = np.zeros((len(y), k), dtype=np.float32)
    pred = np.where(correct, y, (y + 1) % k)
    lg[np.arange(len(y)), pred] = 5.0
    return lg


def test_c_scores_table_findings_and_posthoc():
    k = 3
    y = np.array([0, 0, 1, 1, 2, 2])
    counts = [200, 50, 5]
    good = _logits(y, k, np.ones(6, bool))
    half = _logits(y, k, np.array([1, 1, 1, 0, 0, 0], bool))
    sc = task_c.scores(half, y, good, y, counts, k)
    assert sc["val_acc"] == 0.5 and sc["test_acc"] == 1.0
    assert sc["test_few"] == 1.0 and list(sc["test_per_class"]) == [1.0, 1.0, 1.0]
    results = {("bb", "ce"): {"predictions": {"val_logits": half, "val_targets": y,
                                              "test_logits": half, "test_targets": y},
                              "run_id": "ce01", "config": {}},
               ("bb", "balanced_softmax"): {"predictions": {"val_logits": good, "val_targets": y,
                                                            "test_logits": good, "test_targets": y},
                                            "run_id": "bs01", "config": {}}}

    class DS:
        num_classes = k

    rows = task_c.method_scores(results, DS(), {}, counts, posthoc_tau=1.0, crt_epochs=0,
                                seed=0, device="cpu")
    assert set(rows) == {("bb", "ce"), ("bb", "balanced_softmax"), ("bb", "posthoc (τ=1)")}
    t = task_c.table(rows)
    assert t.loc[("bb", "balanced_softmax"), "val_bal_acc"] == 1.0
    lines = task_c.findings(rows, t)
    assert "val accuracy 0.5000 → 1.0000" in lines[0]
    assert "best method by val balanced accuracy is **balanced_softmax**" in lines[1]
    heads = task_c.headline_rows(rows, t, results)
    assert [h["run_id"] for h in heads[:2]] == ["ce01", "bs01"]
    cms = task_c.confusions(results)
    assert cms["bb"]["balanced_softmax"].trace() == 6 and cms["bb"]["ce"].trace() == 3


def test_c_backbone_catalogue_rejects_unknown_names():
    cat = task_c.backbones(lr_scratch=1e-3, lr_pretrained=0.01)
    assert cat["resnext18"]["optimizer"] == "adam" and cat["resnet18_pretrained"]["pretrained"]
    with pytest.raises(ValueError, match=r"unknown backbone\(s\) \['vgg'\]"):
        task_c.run_all(None, {}, [], "/tmp", catalogue=cat, backbone_names=["vgg"], losses=[],
                       epochs=1, batch_size=1, seed=0, device="cpu")


def test_a_confused_pairs_knn_per_class_and_findings():
    cm = np.array([[9, 1, 0], [4, 6, 0], [0, 0, 10]])
    assert task_a.confused_pairs(cm, ["a", "b", "c"], k=3) == [("b", "a", 4), ("a", "b", 1)]
    emb = np.array([[0, 0], [0, .1], [0, .2], [10, 10], [10, 10.1], [10, 10.2]], float)
    labels = np.array([0, 0, 0, 1, 1, 2])
    per = task_a.knn_per_class(emb, labels, k=2, num_classes=4)
    assert per[:3] == [1.0, 1.0, 0.0] and math.isnan(per[3])
    hist = [{"epoch": 1, "val_acc": .5, "val_loss": 1.2, "train_loss": 1.0, "train_acc": .6},
            {"epoch": 2, "val_acc": .7, "val_loss": .9, "train_loss": .5, "train_acc": .9}]
    lines = task_a.train_findings(hist, cm, ["a", "b", "c"],
                                  {"knn": .8, "knn_per_class": [1.0, .5, .2]}, random_init=True)
    assert "random init" in lines[0] and "0.5000 after epoch 1" in lines[0]
    assert "0.7000 at its best (epoch 2 of 2)" in lines[0]
    assert "a gap of +20.0 points" in lines[1]
    assert "b → a (4 of 30)" in lines[2]
    assert "tightest islands are a (1.00)" in lines[3] and "most mixed classes are c (0.20)" in lines[3]


def test_a_vis_findings_and_tiles():
    vis = {"Pasture": {"channel": 7, "activation": 0.5, "predicted": "Pasture", "prob": 0.9,
                       "traces": {"from tile": [0.5, 2.0], "from noise": [0.1, 1.0]}},
           "Industrial": {"channel": 3, "activation": 0.2, "predicted": "Residential",
                          "prob": 0.6, "traces": {"from tile": [0.2, 0.4],
                                                  "from noise": [-0.1, 0.3]}}}
    lines = task_a.vis_findings(vis)
    assert "classifies the tile correctly (0.90)" in lines[0] and "(×4.0)" in lines[0]
    assert "as Residential" in lines[1] and "(+0.400)" in lines[1]

    class DS:
        classes = ["A", "B"]
        x = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).reshape(4, 3, 2, 2)
        y = torch.tensor([0, 1, 0, 1])

        def indices(self, split):
            return np.array([0, 1, 2, 3])

    tiles = task_a.pick_tiles(DS(), ["B"], 1)
    assert torch.equal(tiles["B"], DS.x[3].float() / 255)
    with pytest.raises(ValueError, match="not in the dataset's classes"):
        task_a.pick_tiles(DS(), ["C"], 0)
    with pytest.raises(ValueError, match="B has 2 test tiles"):
        task_a.pick_tiles(DS(), ["B"], 2)
