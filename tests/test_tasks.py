"""Per-task logic moved out of the notebooks (task_a, task_b, task_c) and the uncertainty of a
finding (stats), on synthetic values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hw2lib.study import task_a, task_b, task_c
from hw2lib.study.reference import REFERENCE
from hw2lib.train.experiment import summarize
from hw2lib.train.recipes import B_EXPERIMENTS, BEST, resolve
from tests.nets import fake_dataset, nb_params, run_record


def _rec(name, seed, val, test=None, n=1000, epochs=None, history=None, **extra):
    cfg = resolve(task_b.with_epochs(task_b.experiment(name), epochs), seed=seed)
    return run_record(cfg, val, test, n=n, run_id=f"id{seed}", history=history or [], **extra)


def test_b_catalogue_ablation_cells_and_references():
    assert task_b.experiment("resnext18")["model"] == "resnext18"
    with pytest.raises(ValueError, match="Known: resnet18, resnet34"):
        task_b.experiment("resnet19")
    for (aug, sched), name in task_b.ABLATION_CELLS.items():
        spec = B_EXPERIMENTS[name]
        assert spec["model"] == "resnext18" and spec["epochs"] == 200
        assert spec.get("augment", "basic") == aug
        assert spec.get("schedule", "none") == sched
    for name, key in task_b.REFERENCE_KEY.items():
        assert key in REFERENCE and B_EXPERIMENTS[name]["track"] == "hw2"
    for _, a, b, _claim in task_b.COMPARISONS:
        assert a in B_EXPERIMENTS and b in B_EXPERIMENTS
    # every lever is the best recipe with exactly the named settings changed
    for name, (_, change) in task_b.LEVERS.items():
        spec = B_EXPERIMENTS[name]
        assert {k for k in spec if spec[k] != BEST.get(k)} == set(change)


def test_b_experiments_all_is_the_whole_catalogue_once():
    assert task_b.experiment_names(["all"]) == list(B_EXPERIMENTS)
    assert task_b.experiment_names(["best", "all"]) == ["best", *(n for n in B_EXPERIMENTS
                                                                  if n != "best")]
    # the notebook's default is "all": JupyterLab trains the whole study
    assert [c["name"] for c in task_b.configs(nb_params("B-ablation"))
            if c["seed"] == 0] == list(B_EXPERIMENTS)


def test_b_configs_resolve_both_protocols():
    cfgs = task_b.configs(nb_params("B-ablation", experiments=["resnet18", "resnext18", "best"],
                                    seeds=[0], ablation_seeds=[0, 1], lr_sgd=0.07))
    assert [(c["name"], c["seed"]) for c in cfgs] == [
        ("resnet18", 0), ("resnext18", 0), ("resnext18", 1), ("best", 0), ("best", 1)]
    r18, rx, best = cfgs[0], cfgs[1], cfgs[3]
    assert (r18["optimizer"], r18["lr"], r18["schedule"], r18["epochs"]) == ("sgd", 0.07, "none",
                                                                            100)
    assert (rx["optimizer"], rx["lr"], rx["schedule"], rx["milestones"], rx["gamma"],
            rx["epochs"], rx["augment"]) == ("adam", 1e-3, "multistep", [80, 120, 160], 0.2, 200,
                                             "color")
    assert (best["stem"], best["augment"], best["mix"], best["ema"], best["tta"],
            best["warmup_epochs"], best["loss_kw"]) == ("small", "d4", "both", 0.999, True, 5,
                                                        {"label_smoothing": 0.1})
    short = task_b.configs(nb_params(
        "B-ablation", experiments=["resnext18", "best", "best_torchvision_stem"], seeds=[0],
        ablation_seeds=[0], epochs=10, best_epochs=4, best_stem="imagenet", batch_size=64))
    assert short[0]["epochs"] == 10 and short[0]["milestones"] == [4, 6, 8]
    assert short[1]["epochs"] == 4 and short[1]["warmup_epochs"] == 1
    assert short[1]["stem"] == "imagenet" and short[2]["stem"] == "imagenet"


def test_b_findings_tables_and_headline():
    recs = [_rec("resnet18", 0, 0.80), _rec("resnet50", 0, 0.70),
            *[_rec("resnext18_aug_only", s, v) for s, v in enumerate((0.80, 0.82, 0.84))],
            *[_rec("resnext18", s, v) for s, v in enumerate((0.90, 0.91, 0.92))],
            *[_rec("resnext18_none", s, v) for s, v in enumerate((0.79, 0.80, 0.81))],
            _rec("resnet34", 0, 0.5, epochs=5)]
    rows = summarize(recs)
    found = task_b.findings(rows)
    depth = next(f for f in found if f.startswith("depth: ResNet-50"))
    # one seed each and no saved predictions here: no interval, and it says so (test_verdicts
    # has the paired images interval from saved predictions)
    assert "test acc 0.7000 vs 0.8000, -10.0 points" in depth
    assert "no per-image predictions saved: no interval" in depth
    assert depth.endswith("— HW2: ResNet-50 clearly worse")
    both = next(f for f in found if f.startswith("ablation: both vs augmentation only"))
    assert ("+9.0 points ± 2.5 (95 %, 3 paired seeds, t(2) on per-seed differences): better"
            in both)
    aug = next(f for f in found if f.startswith("ablation: augmentation only vs none"))
    assert "+2.0 points" in aug and "not distinguishable at this budget" in aug
    table = task_b.ablation_table(rows)
    assert table.loc["crop + flip + colour", "MultiStep LR"] == "0.9100 ± 0.0100 (n=3)"
    assert table.loc["no augmentation", "MultiStep LR"] == "not run"
    shown = task_b.results_table(rows)
    ref = "HW2 report (its split)"
    assert shown.loc["resnet18", ref] == "≈ 0.80"
    assert shown.loc["resnet18", "track"] == "hw2"
    assert shown.loc["resnext18", ref] == "0.8906"
    assert shown.loc["resnet34", ref] == "≈ 0.80 (at 100 ep; this run 5)"
    assert shown.loc["resnet50", ref] == "—"
    assert shown.loc["resnext18", "run ids"] == "id0 id1 id2"
    assert shown.loc["resnext18", "test acc (val-chosen checkpoint)"] == "0.9100 ± 0.0100"
    heads = {h["name"]: h for h in task_b.headline_rows(rows)}
    r18 = "B resnet18: val acc (selection metric)"
    assert heads[r18]["reference"] == "≈ 0.80" and heads[r18]["run_id"] == "id0"
    assert "test acc 0.8000 (val-chosen checkpoint)" in heads[r18]["note"]
    assert "on its own split" in heads[r18]["note"]
    # a reference never sits beside a run of another budget
    r34 = "B resnet34: val acc (selection metric)"
    assert heads[r34]["reference"] is None
    assert "not comparable at this budget" in heads[r34]["note"]


def test_b_best_recipe_levers_choice_and_tracks():
    recs = [*[_rec("best", s, v, test=v - 0.01, val_acc_no_tta=v - 0.02,
                   test_acc_no_tta=v - 0.03) for s, v in enumerate((0.97, 0.98))],
            *[_rec("best_no_mix", s, v, test=0.5, val_acc_no_tta=v, test_acc_no_tta=v)
              for s, v in enumerate((0.985, 0.99))],
            _rec("resnext18", 0, 0.89, test=0.88)]
    rows = summarize(recs)
    chosen = task_b.chosen_recipe(rows)
    assert chosen["name"] == "best_no_mix"  # chosen by validation, whatever its test says
    levers = task_b.lever_table(rows)
    test, val = "test acc (val-chosen checkpoint)", "val acc (selection metric: max over epochs)"
    assert levers.loc["best recipe (all levers)", val] == "0.9750 ± 0.0071 (n=2)"
    assert levers.loc["best recipe (all levers)", test] == "0.9650 ± 0.0071 (n=2)"
    tta = "without 8-view test-time averaging (same weights, same images)"
    assert levers.loc[tta, test].startswith("0.9450") and levers.loc[tta, val].startswith("0.9550")
    assert levers.loc[tta, "Δ test vs best (points)"].startswith("-2.00 ± 0.00")
    mix = levers.loc["without mixup / CutMix", "Δ test vs best (points)"]
    assert mix.startswith("-46.50 ±") and "2 paired seeds" in mix
    tracks = task_b.track_table(rows)
    assert tracks.iloc[1]["HW2 report (its split)"] == "0.8906"
    assert tracks.iloc[0]["this study, best recipe"] == "0.5000 ± 0.0000 (n=2) [best_no_mix]"
    heads = task_b.headline_rows(rows)
    assert heads[-1]["name"].startswith("B best recipe (best_no_mix") and heads[-1]["value"] == 0.5
    last = task_b.findings(rows)[-1]
    assert last.startswith("best recipe (best_no_mix, chosen by val) vs the HW2 protocol's "
                           "ResNeXt-18: test acc 0.5000 vs 0.8800, -38.0 points")
    assert task_b.lever_table(summarize([_rec("resnext18", 0, 0.9)])) is None


def test_b_lr_step_jumps_are_measured_with_their_interval():
    lrs = [1e-3] * 4 + [2e-4] * 3 + [4e-5] * 3
    accs = [0.70, 0.72, 0.71, 0.72, 0.80, 0.81, 0.80, 0.805, 0.80, 0.81]
    hist = [{"epoch": i + 1, "lr": lr, "val_acc": a} for i, (lr, a) in enumerate(zip(lrs, accs, strict=True))]
    recs = [_rec("resnext18", 0, 0.81, n=5000, epochs=10, history=hist)]
    jumps = task_b.step_jumps(recs)
    assert [j["epoch"] for j in jumps] == [5, 8]
    first, second = jumps
    assert math.isclose(first["jump (points)"], 100 * (0.8033333 - 0.7166667), rel_tol=1e-4)
    assert first["verdict"] == "up" and second["verdict"] == "not distinguishable at this budget"
    assert first["lr"] == "0.001 → 0.0002"
    assert task_b.step_jumps([_rec("resnet18", 0, 0.8, history=hist)]) == []  # no MultiStep


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
                              "run_id": "ce01", "config": {}, "val_acc": 0.5, "best_epoch": 1,
                              "history": [{"val_loss": 1.25}]},
               ("bb", "balanced_softmax"): {"predictions": {"val_logits": good, "val_targets": y,
                                                            "test_logits": good, "test_targets": y},
                                            "run_id": "bs01", "config": {}, "val_acc": 1.0,
                                            "best_epoch": 1, "history": [{"val_loss": 0.5}]}}

    rows = task_c.method_scores(results, fake_dataset(num_classes=k), {}, counts, posthoc_tau=1.0, crt_epochs=0,
                                seed=0, device="cpu")
    assert set(rows) == {("bb", "ce"), ("bb", "balanced_softmax"), ("bb", "posthoc (τ=1)")}
    # the post-hoc row: the CE model's logits minus τ·log π (π the class frequencies), re-scored
    log_pi = np.log(np.array(counts) / sum(counts))
    adjusted = (half - log_pi).argmax(1)
    post = rows[("bb", "posthoc (τ=1)")]
    assert post["val_acc"] == (adjusted == y).mean() and list(post["val_pred"]) == list(adjusted)
    assert post["test_bal_acc"] == task_c.scores(half - log_pi, y, half - log_pi, y, counts,
                                                 k)["test_bal_acc"]
    t = task_c.table(rows)
    assert t.loc[("bb", "balanced_softmax"), "val_bal_acc"] == 1.0
    assert "test_pred" not in t.columns
    lines = task_c.findings(rows, t)
    # test accuracy, paired on the same 6 test images: b = 3, c = 0 → ±1.96·sqrt((.5−.25)/6)
    assert lines[0].startswith("**bb**, Balanced Softmax vs cross-entropy: test acc 1.0000 vs "
                               "0.5000, +50.0 points ± 40.0 (95 %, one seed: evaluation noise "
                               "only (paired on 6 images)): better")
    assert "test balanced acc" in lines[1] and "balanced over 3 classes" in lines[1]
    assert "few-shot test accuracy 0.0000 → 1.0000" in lines[1]
    assert lines[2].startswith("**bb**: the best method by val balanced accuracy, "
                               "**balanced_softmax**, vs the worst, ce: test balanced acc 1.0000 "
                               "vs 0.5000")
    heads = task_c.headline_rows(rows, t, results, comparable=lambda cfg: False)
    assert [h["run_id"] for h in heads[:2]] == ["ce01", "bs01"]
    assert heads[-1]["name"].endswith("balanced_softmax: test balanced acc")
    cms = task_c.confusions(results)
    assert cms["bb"]["balanced_softmax: test acc 1.0000"].trace() == 6
    assert cms["bb"]["ce: test acc 0.5000"].trace() == 3
    val = task_c.confusions({k: {**r, "val_acc": r["val_acc"]} for k, r in results.items()},
                            "val")
    # the same loss for every method: plain cross-entropy of the saved logits, named
    ce_right, ce_wrong = math.log(1 + 2 * math.exp(-5)), math.log(math.exp(5) + 2)
    assert set(val["bb"]) == {
        f"ce — validation: plain cross-entropy {(ce_right + ce_wrong) / 2:.4f}, acc 0.5000",
        f"balanced_softmax — validation: plain cross-entropy {ce_right:.4f}, acc 1.0000"}


def test_c_backbones_protocols_and_unknown_names():
    cfgs = task_c.configs(nb_params("C-longtail", backbones=["resnext18", "resnet18_pretrained",
                                                             "best"],
                                    losses=["ce", "balanced_softmax"]))
    by = {c["name"]: c for c in cfgs}
    rx = by["resnext18_balanced_softmax"]
    assert (rx["optimizer"], rx["lr"], rx["milestones"], rx["gamma"], rx["epochs"]) == (
        "adam", 1e-3, [80, 120, 160], 0.2, 200)
    assert by["resnet18_pretrained_ce"]["epochs"] == 100 and by["resnet18_pretrained_ce"][
        "pretrained"]
    best = by["best_ce"]
    assert best["augment"] == "d4" and best["loss_kw"] == {} and best["stem"] == "small"
    ok = dict(long_tail="hw2", n_max=None, lt_counts=None)
    assert task_c.comparable_to_hw2(rx, **ok)
    assert not task_c.comparable_to_hw2(rx, **{**ok, "long_tail": "exponential"})
    assert not task_c.comparable_to_hw2(rx, **{**ok, "n_max": 300})
    assert not task_c.comparable_to_hw2(best, **ok)
    short = task_c.configs(nb_params("C-longtail", backbones=["resnext18"], losses=["ce"],
                                     epochs=5, batch_size=64))[0]
    assert short["milestones"] == [2, 3, 4] and not task_c.comparable_to_hw2(short, **ok)
    with pytest.raises(ValueError, match=r"unknown backbone\(s\) \['vgg'\]"):
        task_c.configs(nb_params("C-longtail", backbones=["vgg"], losses=["ce"]))


def test_c_hw2_long_tail_preset():
    classes = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
               "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]
    labels = np.repeat(np.arange(10), [1800, 1800, 1800, 1500, 1500, 1200, 1500, 1800, 1500,
                                       1800])
    counts = task_c.hw2_counts(classes, labels)
    assert counts == [1800, 1800, 1800, 19, 1500, 10, 36, 1800, 1500, 1800]
    assert task_c.hw2_counts(classes, labels, head_cap=300)[:4] == [300, 300, 300, 19]

    ds = fake_dataset(num_classes=10, y=torch.from_numpy(labels), classes=classes)
    idx, got = task_c.long_tail(ds, {"train": np.arange(len(labels)) + 0},
                                nb_params("C-longtail", long_tail="hw2"))
    assert got == counts
    assert np.bincount(labels[idx["train"]], minlength=10).tolist() == counts
    with pytest.raises(ValueError, match="lacks"):
        task_c.hw2_counts(["a", "b"], np.array([0, 1]))
    with pytest.raises(ValueError, match="unknown long tail"):
        task_c.long_tail(ds, {"train": np.arange(5)}, nb_params("C-longtail", long_tail="zipf"))


def test_a_confused_pairs_and_findings():
    cm = np.array([[9, 1, 0], [4, 6, 0], [0, 0, 10]])
    assert task_a.confused_pairs(cm, ["a", "b", "c"], k=3) == [("b", "a", 4), ("a", "b", 1)]
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
        paths = ["A/A_2.jpg", "B/B_1.jpg", "A/A_1.jpg", "B/B_7.jpg"]
        split = np.array(["test", "val", "train", "test"])

    # by file name, from whichever split holds it
    tiles, info, notes = task_a.choose_tiles(DS(), ["A", "B"], ["A_1.jpg", "B_7.jpg"])
    assert torch.equal(tiles["A"], DS.x[2].float() / 255) and torch.equal(tiles["B"], DS.x[3]
                                                                          .float() / 255)
    assert info == {"A": {"file": "A/A_1.jpg", "split": "train"},
                    "B": {"file": "B/B_7.jpg", "split": "test"}} and notes == []
    # the report's names on other data: the first file of each class, and it says so
    tiles, info, notes = task_a.choose_tiles(DS(), ["A", "B"])
    assert info["A"]["file"] == "A/A_1.jpg" and info["B"]["file"] == "B/B_1.jpg"
    assert len(notes) == 2 and "Pasture_1.jpg, Industrial_1.jpg" in notes[0]
    # a user's own classes: the dataset's first classes stand in
    tiles, info, notes = task_a.choose_tiles(DS(), ["Pasture", "Industrial"])
    assert list(tiles) == ["A", "B"]
    assert notes[0] == "class 'Pasture' is not in this dataset's classes: using its class 'A' instead"
    text = task_a.tiles_text(info, notes)
    assert text.startswith("Tiles — A: A/A_1.jpg (from the train split); B: B/B_1.jpg (from the "
                           "val split).") and "\n- class 'Pasture'" in text
    with pytest.raises(ValueError, match="no other class is left"):
        task_a.choose_tiles(DS(), ["A", "B", "C"])


def test_b_step_jumps_table_says_why_it_is_empty():
    hist = [{"epoch": i + 1, "lr": 1e-3, "val_acc": 0.5} for i in range(3)]
    table, note = task_b.step_jumps_table([_rec("resnext18", 0, 0.5, epochs=3, history=hist)])
    assert table is None and "No LR step fell within" in note
    table, note = task_b.step_jumps_table([_rec("resnet18", 0, 0.5, history=hist)])
    assert table is None and note == "No MultiStep run in this profile's list."
    hist[2]["lr"] = 2e-4
    table, note = task_b.step_jumps_table([_rec("resnext18", 0, 0.5, n=100, epochs=3,
                                                history=hist)])
    assert list(table.index) == [("resnext18", 0, 3)]
    assert note.startswith("Runs shorter than the protocol (resnext18 (3 of 200 epochs))")
    full = [{**_rec("resnext18", 0, 0.5, n=100, history=hist)}]
    assert task_b.step_jumps_table(full)[1] == ""  # at the protocol's 200 epochs: no caveat


def test_c_track_table_puts_each_number_in_its_column():
    cfgs = task_c.configs(nb_params("C-longtail", backbones=["resnext18", "best_no_mix"],
                                    losses=["ce", "balanced_softmax"]))
    results = {(c["group"], c["loss"]): {"config": c} for c in cfgs}
    rows = {k: {"val_acc": v, "test_bal_acc": v - 0.1} for k, v in zip(
        results, (0.80, 0.88, 0.90, 0.95), strict=True)}

    def comparable(cfg):
        return task_c.comparable_to_hw2(cfg, long_tail="hw2", n_max=None, lt_counts=None)

    t = task_c.track_table(rows, results, comparable=comparable)
    col = "this study, best recipe (best_no_mix)"
    ref = "HW2 report (its split)"
    assert t.loc["from scratch, cross-entropy: val acc", ref] == "0.8006"
    assert t.loc["from scratch, Balanced Softmax: val acc", "this study, HW2 protocol"] == "0.8800"
    assert t.loc["from scratch, Balanced Softmax: val acc", col] == "0.9500"
    assert t.loc["from scratch, Balanced Softmax: test balanced acc", col] == "0.8500"
    assert t.loc["ImageNet-pretrained, cross-entropy: val acc",
                 "this study, HW2 protocol"] == "not run"
    short = {k: {"config": {**v["config"], "epochs": 5}} for k, v in results.items()}
    t = task_c.track_table(rows, short, comparable=comparable)
    assert t.loc["from scratch, cross-entropy: val acc", ref] == (
        "0.8006 (another protocol: context only)")


def test_notebook_helpers_of_b_and_c(tmp_path):
    rows = summarize([_rec("resnext18", 0, 0.9)])
    assert task_b.lever_view(rows) == (None, "The best recipe is not in this profile's list.")
    text = task_b.dlresnet_blocks(10)
    assert "'dlresnet18_dilated': '22,174,794 parameters'" in text and "alt_conv1" in text
    task_b.results_table(rows, csv=tmp_path / "b.csv")
    assert (tmp_path / "b.csv").read_text().startswith("name,track,")
    sc = {("bb", "ce"): {"test_per_class": [1.0, 0.5]}, ("bb", "cRT"): {"test_per_class": [0.5]},
          ("cc", "ce"): {"test_per_class": [0.0]}}
    assert task_c.per_class_by_backbone(sc) == {"bb": {"ce": [1.0, 0.5], "cRT": [0.5]},
                                                "cc": {"ce": [0.0]}}
    check = task_c.protocol_check(long_tail="hw2", n_max=None, lt_counts=None)
    cfg = task_c.configs(nb_params("C-longtail", backbones=["resnext18"], losses=["ce"]))[0]
    assert check(cfg) and not task_c.protocol_check(long_tail="exponential", n_max=None,
                                                    lt_counts=None)(cfg)


def test_crt_retrains_only_a_seeded_new_head(small_ds, monkeypatch):
    """cRT: the backbone's weights are untouched, the head is replaced by one trained on frozen
    features with class-balanced draws; the same seed gives the same head; its feature pass uses
    the batch size it is given."""
    from hw2lib import data as D
    from hw2lib.nets.models import build_model

    cfg = resolve({"name": "c", "model": "resnet18", "augment": "none"}, epochs=1, seed=0,
                  batch_size=8)
    train = D.split_indices(small_ds)["train"]
    sizes = []
    real_loader = task_c.make_loader
    monkeypatch.setattr(task_c, "make_loader",
                        lambda *a, **k: sizes.append(k.get("batch_size")) or real_loader(*a, **k))

    def crt(seed):
        torch.manual_seed(0)
        model = build_model("resnet18", small_ds.num_classes)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        task_c.retrain_classifier(model, small_ds, train, cfg, "cpu", epochs=2, lr=0.1,
                                  batch_size=16, seed=seed)
        after = model.state_dict()
        for k, v in before.items():
            assert torch.equal(v, after[k]) != k.startswith("fc."), k  # head changed, rest not
        return after["fc.weight"], after["fc.bias"]

    a, b = crt(0), crt(0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(crt(1)[0], a[0])
    assert sizes == [16, 16, 16]

