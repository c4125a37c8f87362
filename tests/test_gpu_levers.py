"""Launch-bound runs made fast (issue 28, hw2lib.train.gpu_levers): the compiled train step gives
the eager step's numbers on the CPU, a run without a lever keeps its identity, the choice is the
probe's and is cached, and a resumed run trains with its device's optimizer."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from hw2lib.train import gpu_levers as GL
from hw2lib.train.experiment import run_identity
from hw2lib.train.recipes import resolve
from tests.nets import Tiny, fit, make_data, make_loader


def test_the_compiled_train_step_follows_the_eager_losses():
    """`fit(compile_mode=...)` calls torch.compile's module for the train steps (on the CPU here,
    inductor): the same loss trajectory to tolerance, the same weights evaluated."""
    x, y = make_data(n=32)
    runs = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        model = Tiny()
        runs[mode] = fit(model, make_loader(x, y, seed=0), make_loader(x, y, shuffle=False),
                         epochs=3, lr=0.05, device="cpu", progress=False, compile_mode=mode)
    for a, b in zip(runs[None], runs["default"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4, abs=1e-6)
        assert b["val_acc"] == a["val_acc"]


def test_a_run_without_a_lever_keeps_its_identity():
    cfg = resolve({"name": "r"}, epochs=1, seed=0)
    plain = run_identity(cfg, {"d": 1}, weights=None, max_steps=None, precision="bf16")
    assert "levers" not in plain
    assert run_identity(cfg, {"d": 1}, weights=None, max_steps=None, precision="bf16",
                        levers=GL.identity_part({"eval_factor": 8})) == plain  # eval only
    compiled = run_identity(cfg, {"d": 1}, weights=None, max_steps=None, precision="bf16",
                            levers=GL.identity_part({"compile": GL.COMPILE_MODE}))
    assert compiled["levers"] == {"compile": "reduce-overhead"} and compiled != plain


MEASURED = {"eager_img_s": 2000.0, "compiled_img_s": 5000.0, "gain": 2.5,
            "compile_seconds": 60.0, "eval_img_s": {"4": 9000.0, "8": 12000.0, "16": 11000.0}}


def test_the_choice_needs_a_gain_that_repays_the_compilation():
    long = GL.choose(MEASURED, steps_total=12_600, batch=128)  # 100 epochs of ResNeXt-18
    assert long == {"compile": "reduce-overhead", "eval_factor": 8}
    # 200 steps save 200·128·(1/2000 − 1/5000) = 7.7 s: less than twice the 60 s of compiling
    assert "compile" not in GL.choose(MEASURED, steps_total=200, batch=128)
    slow = {**MEASURED, "compiled_img_s": 2200.0, "gain": 1.1}  # GPU-bound: no gain worth it
    assert "compile" not in GL.choose(slow, steps_total=12_600, batch=128)


def test_levers_are_measured_once_per_key_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HW2_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(GL.ENV, raising=False)
    monkeypatch.setattr(GL, "key", lambda device, cfg: {"gpu": "H100", "model": cfg["model"]})
    calls = []

    def probe(cfg, device):
        calls.append(cfg["model"])
        return MEASURED

    cfg = resolve({"name": "r", "model": "resnext18"}, epochs=100, seed=0)
    assert GL.levers_for(cfg, "cpu", steps_total=12_600, probe=probe) == {}  # not on the CPU
    dev = torch.device("cuda")
    assert GL.levers_for(cfg, dev, steps_total=12_600, probe=probe)["compile"] == GL.COMPILE_MODE
    assert GL.levers_for(cfg, dev, steps_total=12_600, probe=probe)["eval_factor"] == 8
    assert calls == ["resnext18"] and (tmp_path / GL.CACHE_FILE).exists()
    assert GL.levers_for(cfg, dev, steps_total=10, probe=probe) == {}  # a smoke run: no probe
    monkeypatch.setenv(GL.ENV, "off")
    assert "compile" not in GL.levers_for(cfg, dev, steps_total=12_600, probe=probe)
    monkeypatch.setenv(GL.ENV, "sometimes")
    with pytest.raises(ValueError, match="HW2_COMPILE"):
        GL.levers_for(cfg, dev, steps_total=12_600, probe=probe)


def test_a_resumed_run_uses_its_devices_optimizer_not_the_checkpoints(tmp_path):
    """A last.pt written on a GPU holds fused=True in its optimizer groups; continued on the CPU
    (or the reverse) the run must update with this device's optimizer."""
    x, y = make_data(n=16)
    kw = dict(lr=0.05, device="cpu", progress=False, out_dir=tmp_path, checkpoint_every=0)
    fit(Tiny(), make_loader(x, y, seed=0), None, epochs=1, **kw)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    for g in ckpt["optimizer"]["param_groups"]:
        g["fused"] = True  # as CUDA wrote it
    torch.save(ckpt, tmp_path / "last.pt")
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0].get("fused")))
    try:
        fit(Tiny(), make_loader(x, y, seed=0), None, epochs=2, **kw)
    finally:
        handle.remove()
    assert seen and set(seen) == {None}


def test_full_packs_its_runs_where_the_doctor_measured_it_faster(tmp_path, monkeypatch, capsys):
    from hw2lib.report import run

    monkeypatch.setenv("HW2_CACHE_DIR", str(tmp_path))
    assert GL.packing_choice("H100") == {}  # nothing measured: one run at a time
    GL.record_packing("H100", [{"copies": 2, "gain": 1.6}, {"copies": 4, "gain": 1.9}])
    assert GL.packing_choice("H100") == {"executor": "ray", "gpus_per_run": 0.25,
                                         "measured_gain": 1.9}
    assert GL.packing_choice("A100") == {}
    pytest.importorskip("ray", reason="Ray comes with the dev extra that make test installs")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "H100")
    planned = {"A-train": {}, "B-ablation": {}, "C-longtail": {"executor": "local"}}
    got = run.with_packing("full", planned)
    assert got["B-ablation"] == {"executor": "ray", "gpus_per_run": 0.25}
    assert got["A-train"] == {} and got["C-longtail"] == {"executor": "local"}  # the user's
    assert "packing 4 runs on the GPU at once" in capsys.readouterr().out
    assert run.with_packing("quick", planned) == planned
    GL.record_packing("H100", [{"copies": 2, "gain": 1.05}])  # measured no faster: not packed
    assert run.with_packing("full", planned) == planned
