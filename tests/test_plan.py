"""`hw2 plan`: every training a report would run, resolved, checked through `hw2 plan --json`
(the protocols of both tracks), without training anything."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hw2lib.cli import main
from hw2lib.data import EUROSAT_CLASSES
from hw2lib.report import plan as P
from tests.nets import nb_params


@pytest.fixture(scope="module")
def full_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "full.json"
    assert main(["plan", "--profile", "full", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def _one(plan, notebook, name, seed=0):
    rows = [r for r in plan["trainings"]
            if r["notebook"] == notebook and r["name"] == name and r["seed"] == seed]
    assert len(rows) == 1, (notebook, name, seed, len(rows))
    return rows[0]


def test_full_plan_hw2_protocol_of_task_b(full_plan):
    rx = _one(full_plan, "B-ablation", "resnext18")
    assert (rx["track"], rx["model"], rx["optimizer"], rx["lr"], rx["weight_decay"],
            rx["schedule"], rx["milestones"], rx["gamma"], rx["epochs"], rx["augment"]) == (
        "hw2", "resnext18", "adam", 0.001, 0.0, "multistep", [80, 120, 160], 0.2, 200, "color")
    assert rx["n_train"] == 16200 and rx["image_steps"] == 200 * 16200
    for seed in (1, 2):  # the schedule/ablation runs carry three seeds
        assert _one(full_plan, "B-ablation", "resnext18", seed)["epochs"] == 200
    for name in ("resnet18", "resnet34", "resnet50", "dlresnet18_5x5_sgd", "resnext50_32x4d"):
        r = _one(full_plan, "B-ablation", name)
        assert (r["optimizer"], r["schedule"], r["epochs"], r["augment"]) == (
            "sgd", "none", 100, "basic"), name
    for name in ("dlresnet18_5x5_adam", "dlresnet18_dilated_adam"):
        r = _one(full_plan, "B-ablation", name)
        assert (r["optimizer"], r["lr"], r["schedule"], r["epochs"]) == ("adam", 0.001, "none",
                                                                         100)
    # Figure 9: both scheduled, 200 epochs; the schedule comparison and ablation on ResNeXt-18
    for name, model in (("resnext50_sched", "resnext50_32x4d"),
                        ("dlresnet18_sched", "dlresnet18_dilated"),
                        ("resnext18_cosine", "resnext18"), ("resnext18_exponential", "resnext18"),
                        ("resnext18_aug_only", "resnext18"), ("resnext18_lr_only", "resnext18"),
                        ("resnext18_none", "resnext18")):
        r = _one(full_plan, "B-ablation", name)
        assert (r["model"], r["epochs"], r["optimizer"], r["lr"]) == (model, 200, "adam", 0.001)
    assert _one(full_plan, "B-ablation", "resnext18_none")["augment"] == "none"
    assert _one(full_plan, "B-ablation", "resnext18_lr_only")["milestones"] == [80, 120, 160]
    assert _one(full_plan, "B-ablation", "resnext18_aug_only")["schedule"] == "none"
    # no 100-epoch cut of a 200-epoch protocol anywhere
    assert all(r["epochs"] in (100, 200) for r in full_plan["trainings"]
               if r["notebook"] != "A-train")


def test_full_plan_best_recipe_track(full_plan):
    best = _one(full_plan, "B-ablation", "best")
    assert (best["track"], best["model"], best["stem"], best["optimizer"], best["lr"],
            best["schedule"], best["warmup_epochs"], best["epochs"], best["augment"],
            best["loss_kw"], best["mix"], best["ema"], best["tta"]) == (
        "best", "resnet18", "small", "sgd", 0.1, "onecycle", 5, 100, "d4",
        {"label_smoothing": 0.1}, "both", 0.999, True)
    levers = {r["name"] for r in full_plan["trainings"] if r["track"] == "best"
              and r["notebook"] == "B-ablation"}
    # no best_no_ema: the EMA lever is read from the best runs' raw weights
    assert levers == {"best", "best_no_d4", "best_no_mix", "best_no_label_smoothing",
                      "best_multistep", "best_torchvision_stem"}
    assert _one(full_plan, "B-ablation", "best_no_mix")["mix"] == "none"
    assert _one(full_plan, "B-ablation", "best_torchvision_stem")["stem"] == "imagenet"
    assert full_plan["summary"]["B-ablation / best"]["trainings"] == 6 * 3


def test_full_plan_task_c_uses_the_reports_long_tail(full_plan):
    train = P.eurosat_train_counts()
    assert sum(train) == 16200
    rx = _one(full_plan, "C-longtail", "resnext18_balanced_softmax")
    tail = dict(zip(EUROSAT_CLASSES, rx["train_per_class"], strict=True))
    assert (tail["Highway"], tail["Pasture"], tail["PermanentCrop"]) == (19, 10, 36)
    for i, c in enumerate(EUROSAT_CLASSES):
        if c not in ("Highway", "Pasture", "PermanentCrop"):
            assert tail[c] == train[i]
    assert rx["long_tail"] == "hw2" and (rx["epochs"], rx["milestones"]) == (200, [80, 120, 160])
    pre = _one(full_plan, "C-longtail", "resnet18_pretrained_ce")
    assert pre["pretrained"] and pre["epochs"] == 100
    best = _one(full_plan, "C-longtail", "best_balanced_softmax")
    assert best["track"] == "best" and best["loss_kw"] == {} and best["augment"] == "d4"


def test_plan_overrides_and_the_exponential_tail(tmp_path, capsys):
    path = tmp_path / "p.json"
    assert main(["plan", "--profile", "full", "--only", "C-longtail", "-p", "long_tail",
                 "exponential", "-p", "epochs", "7", "--json", str(path)]) == 0
    plan = json.loads(path.read_text())
    assert {r["notebook"] for r in plan["trainings"]} == {"C-longtail"}
    rx = _one(plan, "C-longtail", "resnext18_ce")
    counts = rx["train_per_class"]
    assert max(counts) <= 1800 and min(counts) == round(1800 / 100)  # ρ = 100 from n_max
    assert rx["epochs"] == 7 and rx["milestones"] == [3, 4, 6]
    assert _one(plan, "C-longtail", "best_ce")["epochs"] == 100  # best_epochs untouched
    out = capsys.readouterr().out
    assert "nothing is trained" in out and "exponential tail" in out
    assert main(["plan", "--profile", "full", "-p", "epochs", "abc"]) == 2  # checked first
    assert not (tmp_path / "runs").exists()


def test_plan_table_counts_the_rows_given(small_ds):
    from hw2lib.study import task_b

    cfgs = task_b.configs(nb_params("B-ablation", experiments=["resnet18", "best"], seeds=[0],
                                    ablation_seeds=[0], epochs=2, best_epochs=3, batch_size=4))
    rows = {"hw2": np.arange(6), "best": np.arange(len(small_ds.y))}
    t = P.table(cfgs, small_ds, rows)
    assert t.loc[("resnet18", 0), "n_train"] == 6
    assert t.loc[("resnet18", 0), "image_steps"] == 12
    assert t.loc[("best", 0), "image_steps"] == 3 * len(small_ds.y)
    capped = P.table(cfgs, small_ds, rows, max_steps=1)
    assert capped.loc[("best", 0), "image_steps"] == 3 * 4
