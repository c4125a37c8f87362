"""Verdicts a reviewer would sign (issue 18): no duplicate trainings in the full plan, the B and C
findings from saved per-image predictions (paired intervals), selection-free numbers, fair levers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hw2lib.cli import main
from hw2lib.study import stats, task_b, task_c
from hw2lib.train.experiment import summarize
from hw2lib.train.recipes import resolve
from tests.nets import fake_dataset, nb_params

# Settings that change how a run is scored, not what it trains: the EMA never feeds back into
# training, and TTA is evaluation only.
EVAL_ONLY = ("ema", "tta")


def _objective(r: dict) -> str:
    """What a training optimizes, on what data: its recipe without names and evaluation-only
    settings, logit adjustment at τ = 1 written as the Balanced Softmax it equals."""
    skip = {"name", "group", "label", "track", "notebook", "image_steps", "n_val", "n_test",
            *EVAL_ONLY}
    rec = {k: v for k, v in r.items() if k not in skip}
    if rec["loss"] == "logit_adjusted" and rec["loss_kw"].get("tau", 1.0) == 1.0:
        rec["loss"], rec["loss_kw"] = "balanced_softmax", {}
    return json.dumps(rec, sort_keys=True, default=str)


@pytest.fixture(scope="module")
def full_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "full.json"
    assert main(["plan", "--profile", "full", "--json", str(path)]) == 0
    return json.loads(path.read_text())["trainings"]


def test_full_plan_has_no_two_trainings_with_the_same_objective(full_plan):
    keys = [_objective(r) for r in full_plan]
    dupes = {k for k in keys if keys.count(k) > 1}
    assert not dupes, [(r["notebook"], r["name"], r["seed"]) for r in full_plan
                       if _objective(r) in dupes]
    assert not [r for r in full_plan if r["name"] == "best_no_ema" or (
        r["track"] == "best" and r["notebook"] == "B-ablation" and not r["ema"])]
    assert not any(r["loss"] == "logit_adjusted" for r in full_plan)
    # the objective key does see a duplicate (the test can fail): best with and without EMA
    best = next(r for r in full_plan if r["name"] == "best")
    assert _objective(best) == _objective({**best, "name": "best_no_ema", "ema": 0.0})


def test_retired_and_same_objective_trainings_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="best_no_ema.*raw weights.*run `best`"):
        task_b.experiment("best_no_ema")
    with pytest.raises(ValueError, match="same objective.*drop 'logit_adjusted'"):
        task_c.configs(nb_params("C-longtail", backbones=["resnext18"],
                                 losses=["ce", "balanced_softmax", "logit_adjusted"]))
    assert "warm-up" in task_b.LEVERS["best_multistep"][0]


def _logits(y, correct, k=3):
    lg = np.zeros((len(y), k), dtype=np.float32)
    lg[np.arange(len(y)), np.where(correct, y, (y + 1) % k)] = 5.0
    return lg


def _run(tmp_path, name, seed, correct, *, y, n_train=600, **variants):
    """A finished run's record with its predictions.npz: `correct` per test image (and per
    variant, e.g. no_tta=..., raw=...)."""
    d = tmp_path / f"{name}-s{seed}"
    d.mkdir()
    preds = {"test_logits": _logits(y, correct), "test_targets": y,
             "val_logits": _logits(y, correct), "val_targets": y}
    rec = {"config": resolve(task_b.experiment(name), seed=seed), "params": 1,
           "val_acc": float(correct.mean()), "test_acc": float(correct.mean()),
           "val_bal_acc": 0.0, "test_bal_acc": 0.0, "wall_seconds": 1.0,
           "run_id": f"{name}-{seed}", "val_n": len(y), "test_n": len(y),
           "run_folder": str(d), "identity": {"data": {"n_train": n_train}}}
    for v, c in variants.items():
        preds[f"test_logits_{v}"] = _logits(y, c)
        rec[f"test_acc_{v}"] = rec[f"val_acc_{v}"] = float(c.mean())
    np.savez_compressed(d / "predictions.npz", **preds)
    return rec


def _flags(n, wrong):
    c = np.ones(n, bool)
    c[wrong] = False
    return c


def test_b_one_seed_findings_are_about_two_models_with_the_exact_test(tmp_path):
    n = 1000
    y = np.arange(n) % 3
    # resnet50 right where resnet18 is wrong on 20 images, wrong where it is right on 40
    r18 = _flags(n, np.r_[0:80, 80:100])
    r50 = _flags(n, np.r_[0:80, 100:140])
    rows = summarize([_run(tmp_path, "resnet18", 0, r18, y=y),
                      _run(tmp_path, "resnet50", 0, r50, y=y)])
    (fam,) = task_b.findings(rows)
    (res,) = fam.results()
    assert res["label"].startswith("depth: ResNet-50") and res["level"] == "models"
    exact = stats.images_test(r50, r18)
    assert res["p"] == pytest.approx(stats.mcnemar_exact(20, 40)) == exact["p"]
    assert round(res["diff"], 3) == -0.020
    assert ("test acc 0.8800 vs 0.9000 (one seed each), -2.00 points (95 % "
            f"{100 * exact['lo']:+.2f} to {100 * exact['hi']:+.2f})") in res["text"]
    assert "exact McNemar on 20 vs 40 discordant of 1,000 images" in res["text"]
    assert res["word"] == stats.MODELS_DIFFER and "worse" not in res["text"].split(" — ")[0]


def test_b_levers_tta_symmetries_and_ema_from_the_same_runs(tmp_path):
    n = 600
    y = np.arange(n) % 3
    best = _run(tmp_path, "best", 0, _flags(n, np.r_[0:30]), y=y, n_train=16200,
                no_tta=_flags(n, np.r_[0:50]), raw=_flags(n, np.r_[0:45]))
    no_d4 = _run(tmp_path, "best_no_d4", 0, _flags(n, np.r_[0:90]), y=y, n_train=16200,
                 no_tta=_flags(n, np.r_[0:60]))
    hw2 = _run(tmp_path, "resnext18", 0, _flags(n, np.r_[0:120]), y=y, n_train=2000)
    rows = summarize([best, no_d4, hw2])
    t = task_b.lever_table(rows)
    delta = "Δ test vs best (points)"
    tta = t.loc["without 8-view test-time averaging (same weights, same images)", delta]
    assert tta.startswith("-3.33 (95 % ") and "0 vs 20 discordant of 600 images" in tta
    ema = t.loc["without EMA of weights (the raw weights of the same runs)", delta]
    assert ema.startswith("-2.50 (95 % ") and "evaluation noise only" in ema
    sym = "without 8 symmetries (crop + horizontal flip instead)"
    assert t.loc[f"{sym} (scored with 8-view TTA, like the rest)", delta].startswith("-10.00")
    # both scored without TTA: no_d4 0.9000 vs best 0.9167
    assert t.loc[f"{sym} — both scored without TTA", delta].startswith("-1.67")
    view, note = task_b.lever_view(rows)  # styled: the interval's label is shown whole
    assert note.startswith("The lever runs: 100 epochs on 16,200 training images, 1 seed(s).")
    assert "evaluation noise only, no verdict on the recipes" in view.to_html()
    fams = task_b.findings(rows)
    levers = next(f for f in fams if f.name == "Track 2: what each lever is worth")
    assert levers.k == 4 and any(line.startswith("without EMA of weights") for line in
                                 levers.lines())
    last = fams[-1].lines()[-1]
    assert last.startswith("Track 2's headline (best, pre-specified) vs the HW2 protocol's "
                           "ResNeXt-18: test acc 0.9500 vs 0.8000 (one seed each), +15.00 points")
    assert last.endswith("[trained on different amounts of data: 16,200 vs 2,000 images]")
    tracks = task_b.track_table(rows)
    assert tracks.loc["… trained on (images × epochs)",
                      "this study, Track 2 headline (best, pre-specified)"] == "16,200 × 100"


def test_c_posthoc_tau_is_chosen_on_one_half_of_validation():
    from hw2lib.study.remedies import POSTHOC_TAUS

    counts = [100, 10, 1]
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    # a CE model biased towards the head: logits + log prior
    logits = rng.normal(size=(150, 3)).astype(np.float32) + 2.0 * np.eye(3)[y] \
        + np.log(np.array(counts, dtype=np.float32) / sum(counts))
    tau = task_c.posthoc_tau_on_val(logits, y, counts)
    assert tau in POSTHOC_TAUS and tau > 0
    results = {("bb", "ce", 0): {"predictions": {"val_logits": logits, "val_targets": y,
                                                 "test_logits": logits, "test_targets": y}}}
    rows = task_c.method_scores(results, fake_dataset(num_classes=3), {}, counts,
                                posthoc_tau=None, crt_epochs=0, device="cpu")
    choose, _ = task_c.val_halves(y)
    post = rows[("bb", "posthoc", 0)]
    assert post["tau"] == task_c.posthoc_tau_on_val(logits[choose], y[choose], counts)
    # ranked on the other half: post hoc is not better than CE there by construction
    assert "val_rank_bal_acc" in post and "val_rank_bal_acc" in rows[("bb", "ce", 0)]


def test_fit_evaluates_raw_and_ema_weights_each_epoch_and_keeps_the_raw_best(tmp_path):
    """The EMA lever from the same run: val_acc_raw / val_loss_raw in the history, the raw
    weights' best epoch in best_raw.pt (the EMA's in best.pt), resumed exactly."""
    import torch

    from hw2lib.train import checkpoints as C
    from hw2lib.train import engine as E
    from tests.nets import HISTORY_KEYS, Tiny, fit, make_loader

    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 3
    x = torch.rand(24, 3, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    kw = dict(optimizer="sgd", lr=0.05, device="cpu", progress=False, ema=0.8, ema_raw=True)
    torch.manual_seed(1)
    model = Tiny()
    hist = fit(model, make_loader(x, y, seed=0), make_loader(x, y, shuffle=False), epochs=3,
                 out_dir=tmp_path / "run", **kw)
    assert all({"val_acc_raw", "val_loss_raw"} <= set(h) for h in hist)
    raw_best = max(range(3), key=lambda i: (hist[i]["val_acc_raw"], -i))
    ckpt = C.load_checkpoint(tmp_path / "run" / "best_raw.pt")
    assert ckpt["epoch"] == raw_best + 1 and ckpt["val_acc"] == hist[raw_best]["val_acc_raw"]
    scored = Tiny()
    scored.load_state_dict(ckpt["model"])
    val = E.evaluate(scored, make_loader(x, y, shuffle=False))
    assert val["acc"] == hist[raw_best]["val_acc_raw"]
    assert val["loss"] == pytest.approx(hist[raw_best]["val_loss_raw"], rel=1e-5)
    # the raw weights are not the EMA's: best.pt holds the EMA weights
    ema_best = C.load_checkpoint(tmp_path / "run" / "best.pt")
    assert any(not torch.equal(ema_best["model"][k], ckpt["model"][k]) for k in ckpt["model"])
    # without EMA, or with an EMA nobody reads the raw weights of (`ema_raw` off: the lever
    # variants, Task C), the history keeps its keys and no best_raw.pt is written
    for name, change in (("plain", {"ema": 0.0}), ("unread", {"ema_raw": False})):
        plain = fit(Tiny(), make_loader(x, y, seed=0), make_loader(x, y, shuffle=False),
                    epochs=1, out_dir=tmp_path / name, **{**kw, **change})
        assert set(plain[0]) == HISTORY_KEYS
        assert not (tmp_path / name / "best_raw.pt").exists()


def test_run_experiment_scores_the_raw_weights_of_an_ema_run(tmp_path, make_imagefolder):
    from hw2lib import data as D
    from hw2lib.train import experiment as X

    root = make_imagefolder(tmp_path / "images", ("a", "b", "c"), per_class=8, size=16)
    ds = D.load_dataset(tmp_path / "data", image_folder=root, image_size=16, progress=False)
    idx = D.split_indices(ds)
    cfg = resolve({"name": "ema", "model": "resnet18", "ema": 0.9, "ema_raw": True, "tta": True},
                              epochs=2, seed=0, batch_size=8)
    res = X.run_experiment(cfg, ds, tmp_path / "runs", train_idx=idx["train"],
                           val_idx=idx["val"], test_idx=idx["test"], progress=False,
                           device="cpu")
    for k in ("val_acc_raw", "test_acc_raw", "test_acc_raw_no_tta", "test_bal_acc_raw"):
        assert 0.0 <= res[k] <= 1.0, k
    assert 1 <= res["best_epoch_raw"] <= 2
    correct, targets = X.per_image_correct(res["run_folder"], "test", "_raw")
    assert correct.mean() == pytest.approx(res["test_acc_raw"])
    correct, _ = X.per_image_correct(res["run_folder"], "test", "_raw_no_tta")
    assert correct.mean() == pytest.approx(res["test_acc_raw_no_tta"])
    row = X.summarize([res])[0]
    assert row["test_acc_raw_values"] == [res["test_acc_raw"]] and row["seed_ids"] == [0]


def test_references_are_stated_as_the_report_states_them():
    from hw2lib.study.reference import REF_LABEL, reference_value

    assert reference_value("B/dlresnet18_adam", text=True) == "0.82–0.83"
    assert reference_value("B/dlresnet18_adam") is None  # a range has no single number
    assert reference_value("B/resnet18", text=True) == "≈ 0.80"
    assert reference_value("B/resnext50_32x4d", text=True) == "≈ 0.86"
    assert reference_value("B/resnet18") == 0.80 and reference_value("B/resnext18") == 0.8906
    assert reference_value("nope", text=True) == "—" and REF_LABEL == "HW2 report (its split)"
    rows = summarize([{"config": resolve(task_b.experiment(n), seed=0), "params": 1,
                       "val_acc": 0.8, "test_acc": 0.8, "val_bal_acc": 0.8, "test_bal_acc": 0.8,
                       "wall_seconds": 1.0, "run_id": n[:6]}
                      for n in ("dlresnet18_5x5_adam", "resnet18")])
    table = task_b.results_table(rows)
    # on the page the range does not break at its dash (word joiners around it)
    assert table.loc["dlresnet18_5x5_adam", REF_LABEL] == "0.82\u2060–\u20600.83"
    heads = {h["name"]: h["reference"] for h in task_b.headline_rows(rows)}
    assert heads["B dlresnet18_5x5_adam: test acc"] == "0.82–0.83"
    assert heads["B resnet18: test acc"] == "≈ 0.80"


def test_a_reference_only_beside_a_pretrained_resnet50_at_the_protocols_budget():
    from hw2lib.study import task_a

    cfg = resolve({"name": "resnet50", "model": "resnet50", "pretrained": True},
                            epochs=15, seed=0)
    res = {"config": cfg, "warning": None, "identity": {"data": {"n_train": 16200}},
           "run_id": "abc", "val_acc": 0.95, "test_acc": 0.95, "val_bal_acc": 0.95,
           "test_bal_acc": 0.95}
    assert task_a.a_reference(res, 0.963) == (0.963, "The HW2 report's number is its val "
                                                     "accuracy on its own split.")
    ref, why = task_a.a_reference({**res, "warning": "RANDOM INITIALIZATION"}, 0.963)
    assert ref is None and "random init" in why
    ref, why = task_a.a_reference({**res, "config": {**cfg, "epochs": 3},
                                   "identity": {"data": {"n_train": 2000}}}, 0.963)
    assert ref is None and "3 epochs, not the protocol's 15" in why and "2,000 training" in why
    heads = task_a.headline_rows({**res, "warning": "x"}, {"knn": 0.5}, "resnet50", 0.963)
    assert heads[0]["reference"] is None and "not shown beside this run" in heads[0]["note"]
    assert task_a.headline_rows(res, {"knn": 0.5}, "resnet50", 0.963)[0]["reference"] == 0.963


def test_reconstructions_table_renders_per_notebook_and_whole():
    from hw2lib.study import reconstructions as R

    whole = R.markdown()
    assert whole.splitlines()[0] == ("| where the report is silent | the report | this study | "
                                     "notebooks |")
    assert len(whole.splitlines()) == 2 + len(R.ROWS)
    for topic in ("Adam", "split", "second path", "grouping", "baselines' optimizer and epochs",
                  "batch size", "colour-jitter", "crop padding", "normalization",
                  "224 px", "class-balanced β"):
        assert topic in whole, topic
    b = R.markdown("B-ablation")
    assert "DLResNet's second path" in b and "class-balanced β" not in b
    assert "Pasture_1.jpg" in R.markdown("A-vis")
    with pytest.raises(ValueError, match="no reconstruction concerns notebook 'Z'"):
        R.markdown("Z")
    assert R.block("C-longtail").data.startswith("### Reconstructions")


def test_c_confusion_figures_one_per_backbone():
    y = np.arange(6) % 3
    pred = {"val_logits": _logits(y, np.ones(6, bool)), "val_targets": y,
            "test_logits": _logits(y, np.ones(6, bool)), "test_targets": y}
    results = {(bb, loss, s): {"predictions": pred} for bb in ("a", "b")
               for loss in ("ce", "balanced_softmax", "class_balanced") for s in (1, 2)}
    figs = task_c.confusion_figures(results, "val", ["x", "y", "z"])
    assert [f._suptitle.get_text() for f in figs] == ["a (seed 1)", "b (seed 1)"]


@pytest.mark.parametrize("tta", [True, False])
def test_crt_is_scored_like_its_row_neighbours(monkeypatch, tta):
    """cRT's logits come from 8-view TTA where the recipe has it (as the trained rows' do)."""
    import torch
    from torch import nn

    from hw2lib.train import engine as E
    from tests.nets import make_loader

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 3)).eval()  # not symmetric: TTA matters
    y = torch.arange(12) % 3
    x = torch.randn(12, 3, 6, 6)
    loader = make_loader(x, y, shuffle=False)
    views = E.predict_tta(model, loader, "cpu")[0].argmax(1)
    assert not torch.equal(views, E.predict(model, loader, "cpu")[0].argmax(1))
    monkeypatch.setattr(task_c, "load_trained", lambda path, device: (model, {}))
    monkeypatch.setattr(task_c, "retrain_classifier", lambda m, *a, **k: m)
    monkeypatch.setattr(task_c, "make_loader", lambda *a, **k: loader)
    lg = np.zeros((12, 3), dtype=np.float32)
    results = {("bb", "ce", 0): {"predictions": {"val_logits": lg, "val_targets": y.numpy(),
                                                 "test_logits": lg, "test_targets": y.numpy()},
                                 "config": {"tta": tta}, "run_folder": "unused"}}

    rows = task_c.method_scores(results, fake_dataset(num_classes=3),
                                {"train": [], "val": [], "test": []}, [4, 2, 1],
                                posthoc_tau=1.0, crt_epochs=1, device="cpu")
    want = views if tta else E.predict(model, loader, "cpu")[0].argmax(1)
    assert np.array_equal(rows[("bb", "cRT", 0)]["test_pred"], want.numpy())
    assert np.array_equal(rows[("bb", "cRT", 0)]["test_targets"], y.numpy())


def test_the_readme_holds_the_reconstructions_table_as_generated():
    """Issue 18: one table in the library, rendered in each notebook and in the README."""
    from pathlib import Path

    from hw2lib.study import reconstructions

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert reconstructions.markdown().strip() in readme
