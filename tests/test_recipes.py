"""hw2lib.train.recipes: one typed recipe (defaults, resolution, a read-only mapping, its identity), and
the places that take it whole (fit, the plan's table and text)."""

from __future__ import annotations

import pickle

import pytest
import torch

from hw2lib.core import io
from hw2lib.report import plan as P
from hw2lib.train import engine as E
from hw2lib.train.recipes import (
    DEFAULTS,
    LABELS,
    LATER,
    SETTINGS,
    Recipe,
    comparable,
    from_stored,
    resolve,
)


def test_a_recipe_reads_as_a_mapping_without_its_unset_labels():
    r = Recipe(name="a", epochs=3, lr=0.1, track="best")
    assert r["lr"] == r.lr == 0.1 and r.get("momentum") == 0.9
    assert "track" in r and "group" not in r and "label" not in r  # unset labels are absent
    assert dict(r) == {**{k: v for k, v in DEFAULTS.items() if k not in LABELS},
                       "name": "a", "epochs": 3, "lr": 0.1, "gamma": 0.2, "track": "best"}
    assert {**r} == dict(r) and r == dict(r)
    with pytest.raises(KeyError):
        r["lr_typo"]
    with pytest.raises(AttributeError):
        r.lr = 0.2  # frozen


def test_resolve_scales_the_studys_schedule_and_checks_keys():
    ms = resolve({"name": "m", "schedule": "multistep"}, epochs=200, seed=0)
    assert ms.milestones == [80, 120, 160] and ms.gamma == 0.2
    assert resolve({"name": "m", "schedule": "multistep"}, epochs=4, seed=0).milestones == [2, 3]
    ex = resolve({"name": "e", "schedule": "exponential"}, epochs=20, seed=0)
    assert ex.gamma == pytest.approx(0.01 ** (1 / 20))
    assert resolve({"name": "s", "lr": 0.3}, lr=0.1, epochs=1, seed=0).lr == 0.3  # spec wins
    with pytest.raises(ValueError, match=r"unknown keys \['lr_typo'\]; known: .*weight_decay"):
        resolve({"name": "x", "lr_typo": 1}, epochs=1, seed=0)
    with pytest.raises(ValueError, match=r"missing \['epochs'\]"):
        resolve({"name": "x"}, seed=0)
    for key, bad, choices in (("optimizer", "rmsprop", "sgd, adam, adamw"),
                              ("schedule", "step", "none, multistep"),
                              ("augment", "heavy", "none, basic, color, d4")):
        with pytest.raises(ValueError, match=f"unknown {key if key != 'augment' else 'augmentation'}"
                           f" {bad!r}; choose one of {choices}"):
            Recipe(**{key: bad})


def test_identity_is_every_setting_but_name_and_labels():
    r = resolve({"name": "a", "group": "g", "label": "L", "track": "hw2"}, epochs=2, seed=1)
    ident = r.identity()
    assert set(ident) == {*SETTINGS, "seed"} - set(LATER)
    assert r.replace(name="b", group="other").identity() == ident
    assert r.replace(lr=0.2).identity() != ident


def test_a_later_setting_at_its_default_keeps_every_earlier_identity():
    """`select` and `ema_raw` came after runs existed: at their defaults they are not in the
    identity (a run made before them keeps its id); set, they are."""
    r = resolve({"name": "a", "ema": 0.9}, epochs=2, seed=1)
    old = {k: v for k, v in r.as_dict().items() if k not in LATER}  # a checkpoint made before
    assert comparable(old) == r.identity() and "select" not in r.identity()
    assert r.replace(select="bal_acc").identity()["select"] == "bal_acc"
    assert r.replace(ema_raw=True).identity() != r.identity()
    with pytest.raises(ValueError, match="unknown selection metric 'loss'"):
        Recipe(select="loss")


def test_as_dict_is_built_in_and_round_trips_through_a_checkpoint(tmp_path):
    r = resolve({"name": "a", "schedule": "multistep", "loss_kw": {"label_smoothing": 0.1}},
                epochs=10, seed=0)
    torch.save({"config": r.as_dict()}, tmp_path / "c.pt")
    stored = torch.load(tmp_path / "c.pt", weights_only=True)["config"]
    assert from_stored(stored) == r and from_stored(stored).milestones == [4, 6, 8]
    assert from_stored({**stored, "model_kw": {}}) == r  # the retired key of older checkpoints
    assert io.to_builtin({"failed": True, "config": r}) == {"failed": True, "config": r.as_dict()}
    again = pickle.loads(pickle.dumps(r))  # as the Ray executor ships it
    assert isinstance(again, Recipe) and again == r and again.loss_kw == {"label_smoothing": 0.1}


def test_fit_takes_a_recipe_whole():
    x, y = torch.randn(8, 4), torch.arange(8) % 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    with pytest.raises(TypeError, match="fit takes a recipes.Recipe, got dict"):
        E.fit(torch.nn.Linear(4, 2), (loader, None), {"epochs": 1})
    hist = E.fit(torch.nn.Linear(4, 2), (loader, None), Recipe(epochs=2, lr=0.1), device="cpu",
                 progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]


def test_the_plan_shows_every_setting_without_a_list_of_its_own(small_ds):
    """plan.table has a column for every recipe setting a row sets away from its default (and
    its key settings always), and the plan's text names any setting it has no words for where it
    differs from the default: a new recipe field shows in both where it is used."""
    r = resolve({"name": "n", "nesterov": True, "mix_alpha": 0.4, "mix": "mixup",
                 "track": "best"}, epochs=1, seed=0, batch_size=4)
    t = P.table([r], small_ds, small_ds.indices("train"))
    assert {"nesterov", "mix", "mix_alpha", *P.TABLE_ALWAYS} <= set(t.columns)
    assert not {"momentum", "ema", "tta", "pretrained"} & set(t.columns)  # at their defaults
    assert t.loc[("n", 0), "mix_alpha"] == 0.4
    text = P.format_plan([{"notebook": "B-ablation", **r, "n_train": 8, "long_tail": None,
                           "image_steps": 8}])
    assert "nesterov True" in text and "mix_alpha 0.4" in text and "momentum" not in text
