"""Per-task logic moved out of the notebooks (task_a, task_b, task_c) and the uncertainty of a
finding (stats), on synthetic values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hw2lib.study import lr_jumps, stats, task_a, task_b, task_c
from hw2lib.study.reference import REFERENCE
from hw2lib.train.experiment import summarize
from hw2lib.train.recipes import B_EXPERIMENTS, BEST, resolve
from tests.nets import fake_dataset, nb_params, run_record


def _rec(name, seed, val, test=None, n=1000, epochs=None, history=None, **extra):
    cfg = resolve(task_b.with_epochs(task_b.experiment(name), epochs), seed=seed)
    return run_record(cfg, val, test, n=n, run_id=f"{name}-{seed}", history=history or [],
                      **extra)


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
    for _, a, b, _claim, family in task_b.COMPARISONS:
        assert a in B_EXPERIMENTS and b in B_EXPERIMENTS
        assert family in (task_b.CLAIMS, task_b.FURTHER)
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
    # the report's final model's baseline (resnet18) runs the claims' seeds too
    assert [(c["name"], c["seed"]) for c in cfgs] == [
        ("resnet18", 0), ("resnet18", 1), ("resnext18", 0), ("resnext18", 1), ("best", 0),
        ("best", 1)]
    r18, rx, best = cfgs[0], cfgs[2], cfgs[4]
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
    # best_stem "imagenet": the stem lever is tried the other way, with the 64-px stem
    assert short[1]["stem"] == "imagenet" and short[2]["stem"] == "small"


def test_b_the_headline_trains_on_its_own_budget_only_where_it_differs():
    """quick: the levers at a small budget, the pre-specified headline as its own run at its
    budget, tested on the whole test split; full: one budget, the headline is the lever run."""
    small = nb_params("B-ablation", experiments=["best", "best_no_mix"], ablation_seeds=[0],
                      headline="best_no_mix", best_epochs=12, best_stem="imagenet",
                      lever_epochs=3, lever_train_per_class=50)
    cfgs = task_b.configs(small)
    assert [(c["name"], c["epochs"]) for c in cfgs] == [("best", 3), ("best_no_mix", 3),
                                                        ("headline", 12)]
    head = cfgs[-1]
    assert head["mix"] == "none" and head["stem"] == "imagenet" and task_b.rows_key(head) == \
        "headline"
    assert task_b.train_caps(small) == {"hw2": None, "best": 50, "headline": None}
    same = task_b.configs({**small, "lever_epochs": None, "lever_train_per_class": None})
    assert [c["name"] for c in same] == ["best", "best_no_mix"]
    assert not task_b.separate_headline({**small, "experiments": ["best"]})


def _line(families, start):
    return next(line for f in families for line in f.lines() if line.startswith(start))


def test_b_findings_tables_and_headline():
    recs = [*[_rec("resnet18", s, v) for s, v in enumerate((0.80, 0.81, 0.79))],
            _rec("resnet50", 0, 0.70),
            *[_rec("resnext18_aug_only", s, v) for s, v in enumerate((0.80, 0.82, 0.84))],
            *[_rec("resnext18", s, v) for s, v in enumerate((0.90, 0.91, 0.92))],
            *[_rec("resnext18_none", s, v) for s, v in enumerate((0.79, 0.80, 0.81))],
            _rec("resnet34", 0, 0.5, epochs=5)]
    rows = summarize(recs)
    fams = task_b.findings(rows)
    assert [f.name for f in fams] == [task_b.CLAIMS]
    depth = _line(fams, "depth: ResNet-50")
    # a one-seed arm and no saved predictions here: no interval, no word, and it says so
    # (test_verdicts has the exact test from saved predictions)
    assert "test acc 0.7000 vs 0.8000 (means of 1 vs 3 seeds)" in depth
    assert "no per-image predictions saved: no interval" in depth
    said = depth.split(" — ")[0]  # the line without the report's claim
    assert "better" not in said and "worse" not in said
    assert depth.endswith("— HW2: ResNet-50 clearly worse")
    both = _line(fams, "ablation: both vs augmentation only")
    assert "+9.00 points ± 2.48 (95 %), 3 paired seeds, t(2) on per-seed differences" in both
    assert "(k = 3)" in both and both.endswith(": better")  # k: the claims with a test
    aug = _line(fams, "ablation: augmentation only vs none")
    assert "+2.00 points" in aug and aug.endswith(": not distinguishable — HW2: ≈ +2 points")
    final = _line(fams, "the report's final model vs its baseline")
    assert "(means of 3 vs 3 seeds)" in final and "paired" in final
    table = task_b.ablation_table(rows)
    assert table.loc["crop + flip + colour", "MultiStep LR"] == "0.9100 ± 0.0100 (n=3)"
    assert table.loc["no augmentation", "MultiStep LR"] == "not run"
    shown = task_b.results_table(rows)
    ref = "HW2 report (its split)"
    assert shown.loc["resnet18", ref] == "≈\u00a00.80"
    assert shown.loc["resnet18", "track"] == "hw2"
    assert shown.loc["resnext18", ref] == "0.8906"
    assert shown.loc["resnet34", ref] == "≈\u00a00.80\u00a0at\u00a0100\u00a0ep"  # one line on the page
    assert shown.loc["resnet50", ref] == "—"
    ranged = task_b.results_table(summarize([_rec("resnext18_cosine", 0, 0.5, epochs=5)]))
    assert ranged.loc["resnext18_cosine", ref] == "0.88\u2060–\u20600.89\u00a0at\u00a0200\u00a0ep"
    assert shown.loc["resnext18", "run ids"] == "resnext18-0 resnext18-1 resnext18-2"
    assert shown.loc["resnext18", "test acc (val-chosen checkpoint)"] == "0.9100 ± 0.0100"
    heads = {h["name"]: h for h in task_b.headline_rows(rows)}
    r18 = "B resnet18: test acc"
    assert heads[r18]["reference"] == "≈ 0.80" and heads[r18]["run_id"] == "resnet18-0 resnet18-1 resnet18-2"
    assert heads[r18]["value"] == pytest.approx(0.80)
    assert "val acc 0.8000 (the selection metric)" in heads[r18]["note"]
    assert "its val accuracy on its own split" in heads[r18]["note"]
    # a reference never sits beside a run of another budget
    r34 = "B resnet34: test acc"
    assert heads[r34]["reference"] is None
    assert "not comparable at this budget" in heads[r34]["note"]


def test_b_best_recipe_levers_headline_and_tracks():
    recs = [*[_rec("best", s, v, test=v - 0.01, val_acc_no_tta=v - 0.02,
                   test_acc_no_tta=v - 0.03) for s, v in enumerate((0.97, 0.98))],
            *[_rec("best_no_mix", s, v, test=0.5, val_acc_no_tta=v, test_acc_no_tta=v)
              for s, v in enumerate((0.985, 0.99))],
            _rec("resnext18", 0, 0.89, test=0.88)]
    rows = summarize(recs)
    # validation would pick best_no_mix: shown as exploratory, not as the headline
    note = task_b.exploratory_choice(rows)
    assert note.startswith("Exploratory: of the 2 best-recipe variants") and "best_no_mix" in note
    assert "optimistic" in note
    levers = task_b.lever_table(rows)
    test, val = "test acc (val-chosen checkpoint)", "val acc (selection metric: max over epochs)"
    assert levers.loc["best recipe (all levers)", val] == "0.9750 ± 0.0071 (n=2)"
    assert levers.loc["best recipe (all levers)", test] == "0.9650 ± 0.0071 (n=2)"
    tta = "without 8-view test-time averaging (same weights, same images)"
    assert levers.loc[tta, test].startswith("0.9450") and levers.loc[tta, val].startswith("0.9550")
    # the same 0.02 on both seeds: no spread, so no interval and no word, and it says why
    assert levers.loc[tta, "Δ test vs best (points)"].startswith("-2.00 the per-seed "
                                                                 "differences are all equal")
    assert levers.loc[tta, "word"] == "no verdict"
    mix = levers.loc["without mixup / CutMix", "Δ test vs best (points)"]
    assert mix.startswith("-46.50 ±") and "2 paired seeds" in mix
    assert levers.loc["without mixup / CutMix", "Holm p (k = 1)"] != "—"
    tracks = task_b.track_table(rows)  # the pre-specified headline: `best`
    col = "this study, Track 2 headline (best, pre-specified)"
    assert tracks.iloc[1]["HW2 report (its split)"] == "0.8906"
    assert tracks.iloc[0][col] == "0.9650 ± 0.0071 (n=2)"
    heads = task_b.headline_rows(rows)
    assert heads[-1]["name"] == "B Track 2 headline (best, pre-specified): test acc"
    assert heads[-1]["value"] == pytest.approx(0.965)
    fams = task_b.findings(rows)
    last = fams[-1]
    assert last.name == task_b.TRACKS and last.k == 0  # one seed of resnext18: about models
    assert last.lines()[0].startswith("Track 2's headline (best, pre-specified) vs the HW2 "
                                      "protocol's ResNeXt-18: test acc 0.9650 vs 0.8800")
    # a headline named otherwise is the one shown
    assert task_b.track_table(rows, "best_no_mix").iloc[0][
        "this study, Track 2 headline (best_no_mix, pre-specified)"] == "0.5000 ± 0.0000 (n=2)"
    assert task_b.lever_table(summarize([_rec("resnext18", 0, 0.9)])) is None


def test_b_lr_step_jumps_are_a_family_with_their_interval():
    lrs = [1e-3] * 4 + [2e-4] * 3 + [4e-5] * 3
    accs = [0.70, 0.72, 0.71, 0.72, 0.80, 0.81, 0.80, 0.805, 0.80, 0.81]
    hist = [{"epoch": i + 1, "lr": lr, "val_acc": a} for i, (lr, a) in enumerate(zip(lrs, accs, strict=True))]
    recs = [_rec("resnext18", 0, 0.81, n=5000, epochs=10, history=hist)]
    jumps = lr_jumps.step_jumps(recs)
    assert [j["epoch"] for j in jumps] == [5, 8]
    first, second = jumps
    assert first["jump (points)"] == round(100 * (0.8033333 - 0.7166667), 2)
    assert first["change"] == "rose" and second["change"] == "no change beyond evaluation noise"
    assert first["k"] == 2 and first["Holm p"] == pytest.approx(min(1.0, 2 * first["p"]))
    assert first["lr"] == "0.001 → 0.0002"
    assert lr_jumps.step_jumps([_rec("resnet18", 0, 0.8, history=hist)]) == []  # no MultiStep


def _logits(y, k, correct):
    """Logits whose argmax is right exactly where `correct` is True (else class (y+1) % k)."""
    lg = np.zeros((len(y), k), dtype=np.float32)
    pred = np.where(correct, y, (y + 1) % k)
    lg[np.arange(len(y)), pred] = 5.0
    return lg


def _c_result(run_id, val_lg, test_lg, y, loss="ce", bb="bb", seed=0):
    return {"predictions": {"val_logits": val_lg, "val_targets": y, "test_logits": test_lg,
                            "test_targets": y},
            "run_id": run_id, "config": {"group": bb, "loss": loss, "seed": seed, "epochs": 1},
            "history": [{"val_loss": 1.0}]}


def test_c_scores_table_findings_and_posthoc():
    k = 3
    y = np.repeat([0, 1, 2], 20)
    counts = [200, 50, 5]
    good = _logits(y, k, np.ones(60, bool))
    rng = np.random.default_rng(0)
    half = _logits(y, k, rng.random(60) < 0.5)
    sc = task_c.scores(half, y, good, y, counts, k, np.arange(30, 60))
    assert sc["val_acc"] == (half.argmax(1) == y).mean() and sc["test_acc"] == 1.0
    assert sc["test_few"] == 1.0 and list(sc["test_per_class"]) == [1.0, 1.0, 1.0]
    assert sc["val_rank_bal_acc"] == task_c.metrics.balanced_accuracy(y[30:], half.argmax(1)[30:])
    results = {("bb", "ce", 0): _c_result("ce01", half, half, y),
               ("bb", "balanced_softmax", 0): _c_result("bs01", good, good, y,
                                                        "balanced_softmax")}
    rows = task_c.method_scores(results, fake_dataset(num_classes=k), {}, counts, posthoc_tau=1.0,
                                crt_epochs=0, device="cpu")
    assert set(rows) == {("bb", "ce", 0), ("bb", "balanced_softmax", 0), ("bb", "posthoc", 0)}
    # the post-hoc row: the CE model's logits minus τ·log π (π the class frequencies), re-scored
    log_pi = np.log(np.array(counts) / sum(counts))
    adjusted = (half - log_pi).argmax(1)
    post = rows[("bb", "posthoc", 0)]
    assert post["tau"] == 1.0 and list(post["val_pred"]) == list(adjusted)
    t = task_c.table(rows, results)
    assert t.loc[("bb", "balanced_softmax"), "test_bal_acc"] == 1.0
    assert t.loc[("bb", "posthoc"), "τ"] == "1" and t.loc[("bb", "posthoc"), "run ids"] == "ce01"
    assert "test_pred" not in t.columns and list(t.index)[0] == ("bb", "ce")
    fams, notes = task_c.findings(rows, counts, results)
    assert [f.name for f in fams] == [task_c.remedies_family("bb"), task_c.CHOSEN, task_c.SHOTS]
    remedy = fams[0].lines()
    assert remedy[0].startswith("bb: balanced_softmax vs cross-entropy: test balanced acc "
                                "1.0000 vs ")
    assert "(one seed each)" in remedy[0] and "sign-flip" in remedy[0] and "(k = 2)" in remedy[0]
    assert remedy[0].endswith(stats.MODELS_DIFFER)
    chosen = fams[1].lines()[0]
    assert chosen.startswith("bb: the method chosen on validation vs cross-entropy: test "
                             "balanced acc")
    assert "[chosen: balanced_softmax, 1.0000 vs CE's" in chosen
    shots = fams[2].lines()
    assert [s.split(":")[0] for s in shots] == [
        "bb, few-shot classes", "bb, many-shot classes"]
    assert notes == []
    heads = task_c.headline_rows(t, results, comparable=lambda cfg: False)
    assert [h["run_id"] for h in heads] == ["ce01", "bs01"]
    assert heads[0]["name"] == "C bb ce: test acc" and "n=1" in heads[0]["note"]
    cms = task_c.confusions(results)
    assert cms["bb"]["balanced_softmax: test acc 1.0000"].trace() == 60
    val = task_c.confusions(results, "val")
    ce_right = math.log(1 + 2 * math.exp(-5))
    assert f"balanced_softmax — validation: plain cross-entropy {ce_right:.4f}, acc 1.0000" in \
        val["bb"]


def test_c_with_seeds_tests_over_seeds_and_ranks_on_the_other_half():
    """Two seeds each: the remedy lines test over seeds (paired t) and may say better/worse; τ is
    chosen on the first half of validation, the methods ranked on the second; a validation
    choice of CE itself is said, not compared with itself."""
    k, counts = 3, [200, 50, 5]
    y = np.repeat([0, 1, 2], 20)
    rng = np.random.default_rng(1)
    results = {}
    for s in (0, 1, 2):
        results[("bb", "ce", s)] = _c_result(f"ce{s}", *[_logits(y, k, rng.random(60) < 0.6)
                                                         for _ in range(2)], y, seed=s)
        results[("bb", "balanced_softmax", s)] = _c_result(
            f"bs{s}", *[_logits(y, k, rng.random(60) < 0.9) for _ in range(2)], y,
            "balanced_softmax", seed=s)
    rows = task_c.method_scores(results, fake_dataset(num_classes=k), {}, counts, posthoc_tau=None,
                                crt_epochs=0, device="cpu")
    t = task_c.table(rows, results)
    assert t.loc[("bb", "ce"), "seeds"] == 3 and t.loc[("bb", "ce"), "run ids"] == "ce0 ce1 ce2"
    assert t.loc[("bb", "balanced_softmax"), "test_bal_acc_sd"] > 0
    fams, _ = task_c.findings(rows, counts, results)
    line = fams[0].lines()[0]
    assert "(means of 3 vs 3 seeds)" in line and "3 paired seeds" in line
    assert line.endswith(": better")
    choose, rank = task_c.val_halves(y)
    assert len(choose) == len(rank) == 30 and not set(choose) & set(rank)
    assert np.bincount(y[choose]).tolist() == [10, 10, 10]
    # τ from the choosing half only: the ranking half's labels may change without moving it
    lg = results[("bb", "ce", 0)]["predictions"]["val_logits"]
    assert rows[("bb", "posthoc", 0)]["tau"] == task_c.posthoc_tau_on_val(lg[choose], y[choose],
                                                                          counts)
    only_ce = {key: r for key, r in rows.items() if key[1] == "ce"}
    only_ce.update({("bb", "cRT", s): {**rows[("bb", "ce", s)], "val_rank_bal_acc": 0.0}
                    for s in (0, 1, 2)})
    fams, notes = task_c.findings(only_ce, counts, results)
    assert notes and notes[0].startswith("bb: validation (its ranking half) chooses "
                                         "cross-entropy itself")


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
    # both tiles' top channel the same: one image from noise, listed once (issue 29)
    shared = {"Pasture": {**vis["Pasture"], "noise_shared_with": None},
              "Industrial": {**vis["Industrial"], "channel": 7, "noise_shared_with": "Pasture",
                             "traces": {**vis["Industrial"]["traces"],
                                        "from noise": vis["Pasture"]["traces"]["from noise"]}}}
    (row,) = task_a.vis_headline_rows(shared, "r1")
    assert row["name"] == ("Pasture and Industrial: act. max. gain from noise (the top "
                           "channel of both tiles)") and row["value"] == pytest.approx(0.9)
    assert row["note"] == "channel 7"
    assert "from noise it is Pasture's image" in task_a.vis_findings(shared)[1]
    assert len(task_a.vis_headline_rows(vis, "r1")) == 2

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
    table, note = lr_jumps.step_jumps_table([_rec("resnext18", 0, 0.5, epochs=3, history=hist)])
    assert table is None and "No LR step fell within" in note
    table, note = lr_jumps.step_jumps_table([_rec("resnet18", 0, 0.5, history=hist)])
    assert table is None and note == "No MultiStep run in this profile's list."
    hist[2]["lr"] = 2e-4
    table, note = lr_jumps.step_jumps_table([_rec("resnext18", 0, 0.5, n=100, epochs=3,
                                                history=hist)])
    assert list(table.data.index) == [("resnext18", 0, 3)]
    assert "a family of k = 1 jumps" in note and "evaluation noise only" in note
    assert "Runs shorter than the protocol (resnext18 (3 of 200 epochs))" in note
    assert "+0.00" in table.to_html() and "0.0000000" not in table.to_html()  # two decimals
    full = [{**_rec("resnext18", 0, 0.5, n=100, history=hist)}]
    assert "shorter" not in lr_jumps.step_jumps_table(full)[1]  # the protocol's epochs: no caveat


def test_c_track_table_puts_each_number_in_its_column():
    cfgs = task_c.configs(nb_params("C-longtail", backbones=["resnext18", "best_no_mix"],
                                    losses=["ce", "balanced_softmax"], seeds=[0]))
    results = {(c["group"], c["loss"], 0): {"config": c} for c in cfgs}
    t = pd.DataFrame({(bb, m): {"test_acc": v, "test_bal_acc": v - 0.1} for (bb, m, _), v in zip(
        results, (0.80, 0.88, 0.90, 0.95), strict=True)}).T

    def comparable(cfg):
        return task_c.comparable_to_hw2(cfg, long_tail="hw2", n_max=None, lt_counts=None)

    tt = task_c.track_table(t, results, comparable=comparable)
    col = "this study, best recipe (best_no_mix)"
    ref = "HW2 report (its split)"
    assert tt.loc["from scratch, cross-entropy: test acc", ref] == "0.8006"
    assert tt.loc["from scratch, Balanced Softmax: test acc", "this study, HW2 protocol"] == \
        "0.8800"
    assert tt.loc["from scratch, Balanced Softmax: test acc", col] == "0.9500"
    assert tt.loc["from scratch, Balanced Softmax: test balanced acc", col] == "0.8500"
    assert tt.loc["ImageNet-pretrained, cross-entropy: test acc",
                  "this study, HW2 protocol"] == "not run"
    short = {k: {"config": {**v["config"], "epochs": 5}} for k, v in results.items()}
    tt = task_c.track_table(t, short, comparable=comparable)
    assert tt.loc["from scratch, cross-entropy: test acc", ref] == (
        "0.8006 (another protocol: context only)")
    assert all(c["select"] == "bal_acc" for c in cfgs)  # C keeps the best balanced checkpoint


def test_notebook_helpers_of_b_and_c(tmp_path):
    rows = summarize([_rec("resnext18", 0, 0.9)])
    assert task_b.lever_view(rows) == (None, "The best recipe is not in this profile's list.")
    blocks = task_b.dlresnet_table(10)  # a table, not a dict and a module repr (issue 29)
    assert blocks.loc["dlresnet18_dilated", "parameters"] == "22,174,794"
    assert blocks.loc["dlresnet18_5x5", "second path"] == ("5×5 conv → BN → ReLU → 5×5 conv → "
                                                           "BN")
    assert blocks.loc["dlresnet18_dilated", "second path"].startswith("3×3 (dilation 2) conv")
    assert blocks.loc["resnet18", "second path"] == "—"
    task_b.results_table(rows, csv=tmp_path / "b.csv")
    assert (tmp_path / "b.csv").read_text().startswith("name,track,")
    sc = {("bb", "ce", 0): {"test_per_class": [1.0, 0.5]},
          ("bb", "ce", 1): {"test_per_class": [0.0, 0.5]},
          ("bb", "cRT", 0): {"test_per_class": [0.5, 0.5]},
          ("cc", "ce", 0): {"test_per_class": [0.0, 1.0]}}
    per = task_c.per_class_by_backbone(sc)  # the seeds' mean
    assert list(per) == ["bb", "cc"] and list(per["bb"]) == ["ce", "cRT"]
    assert list(per["bb"]["ce"]) == [0.5, 0.5] and list(per["cc"]["ce"]) == [0.0, 1.0]
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
    from hw2lib.study import remedies

    cfg = resolve({"name": "c", "model": "resnet18", "augment": "none"}, epochs=1, seed=0,
                  batch_size=8)
    train = D.split_indices(small_ds)["train"]
    sizes = []
    real_loader = remedies.make_loader
    monkeypatch.setattr(remedies, "make_loader",
                        lambda *a, **k: sizes.append(k.get("batch_size")) or real_loader(*a, **k))

    def crt(seed):
        torch.manual_seed(0)
        model = build_model("resnet18", small_ds.num_classes)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        remedies.retrain_classifier(model, small_ds, train, cfg, "cpu", epochs=2, lr=0.1,
                                  batch_size=16, seed=seed)
        after = model.state_dict()
        for k, v in before.items():
            assert torch.equal(v, after[k]) != k.startswith("fc."), k  # head changed, rest not
        return after["fc.weight"], after["fc.bias"]

    a, b = crt(0), crt(0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(crt(1)[0], a[0])
    assert sizes == [16, 16, 16]



def test_b_budget_note_says_when_the_runs_are_at_chance():
    near = summarize([_rec("resnet18", 0, 0.11, epochs=2, n=500),
                      _rec("resnext18", 0, 0.12, epochs=2, n=500)])
    note = task_b.budget_note(near, 10)
    assert note.startswith("Budget: the HW2-protocol runs here trained 2 epoch(s)")
    assert "near chance (1/10 = 0.10)" in note and "not the report's effects" in note
    fine = summarize([_rec("resnet18", 0, 0.8, epochs=50)])
    assert "near chance" not in task_b.budget_note(fine, 10)
    assert task_b.budget_note(summarize([_rec("resnet18", 0, 0.8)]), 10) == ""  # the protocol's
