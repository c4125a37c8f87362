"""The training loop: `fit` (train + evaluate each epoch, history as JSON lines, checkpoints,
exact resume), `train_step`, `train_one_epoch`, `evaluate`, `predict` and 8-view `predict_tta`.

Shaped like torchvision's `references/classification`: `train_step`, `train_one_epoch` and
`evaluate` are plain functions; `fit` is a short loop over named steps (`_setup`, `_resume`,
`_train_and_check`, `_save_epoch`; its progress lines are `hw2lib.train.progress`'s). Device-agnostic:
on CUDA it trains under bf16 autocast (the classifier head in float32), channels_last where the
model gains from it (`runtime.channels_last_for`), fused optimizers and cudnn.benchmark; on the
CPU in float32 or, where the CPU probe chose it, bf16 autocast (`run_experiment` passes `amp`).

Checkpoints (`last.pt` to resume exactly, `best.pt` to evaluate, never a non-finite epoch), the
history and run.json are described and written in `hw2lib.train.checkpoints`; the LR schedule is a
per-step table (`hw2lib.train.schedules`); seeds, devices and RNG states are `hw2lib.core.runtime`'s; a
non-finite epoch raises `divergence.TrainingDiverged`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hw2lib.core import io, runtime
from hw2lib.nets.losses import build_loss
from hw2lib.nets.metrics import balanced_accuracy
from hw2lib.nets.nn_utils import eval_mode, keep_head_fp32, model_device
from hw2lib.train import checkpoints, schedules
from hw2lib.train import progress as prog
from hw2lib.train.divergence import TrainingDiverged, check_epoch
from hw2lib.train.ema import EMA
from hw2lib.train.mixing import Mixer, check_mix
from hw2lib.train.recipes import Recipe

CHECK_EVERY = 50  # steps between the checks of the training loss (each one a host sync)

# --------------------------------------------------------------------------- train / evaluate


def train_step(model: nn.Module, criterion, optimizer, xb, yb, device: torch.device, *,
               amp: bool = False, channels_last: bool = False, mix=None):
    """One optimization step on one batch: move it to `device`, (mix it: `mix` is a
    `mixing.Mixer`, the loss then λ·loss(y) + (1 − λ)·loss(y_partner)), forward (under bf16
    autocast when `amp`), backward, `optimizer.step()`. Returns (loss, logits, targets), detached
    and still on the device: nothing here waits for the device (no `.item()`), so steps queue up
    on CUDA."""
    xb, yb = runtime.batch_to_device(xb, yb, device, channels_last)
    if mix is not None:
        xb, yb, y_partner, lam = mix(xb, yb)
    with runtime.autocast(device, amp):
        out = model(xb)
        loss = criterion(out, yb)
        if mix is not None:
            loss = lam * loss + (1.0 - lam) * criterion(out, y_partner)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), out.detach(), yb


def train_one_epoch(model: nn.Module, criterion, optimizer, loader, device: torch.device, *,
                    epoch: int = 1, amp: bool = False, channels_last: bool = False,
                    max_steps: int | None = None, bar=None, mix=None,
                    ema=None, scheduler=None) -> dict:
    """One pass over `loader` (at most `max_steps` batches) of `train_step`s: dict(loss, acc,
    images, seconds) — loss the sample-weighted mean, acc a fraction (on mixed batches, against
    each sample's own label). `mix`: see `train_step`; `ema`: an `ema.EMA` updated after every
    step; `scheduler`: the LR schedule, stepped after every optimizer step.

    Loss sum and correct count accumulate on the device; the losses are checked for NaN/inf in
    batches of `CHECK_EVERY` steps and at the end (the only host syncs), so a `TrainingDiverged`
    comes at most `CHECK_EVERY - 1` steps late but still names the first bad step.
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    images, pending, step = 0, [], 0

    def check(upto: int) -> None:
        losses = torch.stack(pending)
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            i = int(bad[0])
            first = upto - len(pending) + i + 1
            raise TrainingDiverged(
                f"training loss became {losses[i].item()} at epoch {epoch}, step {first}; "
                "lower the learning rate, add warmup or check the inputs.")
        if bar is not None:
            bar.set_postfix_str(f"loss {losses[-1].item():.3f}", refresh=False)
        pending.clear()

    t0 = time.perf_counter()
    for xb, yb in loader:
        if max_steps is not None and step >= max_steps:
            break
        loss, out, yb = train_step(model, criterion, optimizer, xb, yb, device, amp=amp,
                                   channels_last=channels_last, mix=mix)
        if ema is not None:
            ema.update()
        if scheduler is not None:
            scheduler.step()
        step += 1
        n = yb.shape[0]
        images += n
        pending.append(loss.float())
        loss_sum += loss.double() * n
        correct += (out.argmax(1) == yb).sum()
        if step % CHECK_EVERY == 0:
            check(step)
        if bar is not None:
            bar.update(1)
    if pending:
        check(step)
    runtime.synchronize(device)
    seconds = time.perf_counter() - t0
    if images == 0:
        raise ValueError("the train loader yielded no batches (empty dataset, or batch_size > "
                         "dataset size with drop_last=True)")
    return {"loss": loss_sum.item() / images, "acc": correct.item() / images, "images": images,
            "seconds": seconds}


def d4_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of a batch of square images (B×C×H×W): rotations by 0/90/180/270°, then
    the same of the mirrored batch; the first view is `x` itself."""
    return [torch.rot90(v, k, (2, 3)) for v in (x, x.flip(3)) for k in range(4)]


def _forward_batches(model, loader, device, amp, channels_last, tta: bool = False):
    """Yield (logits float32, targets) over `loader` in eval mode, without gradients; with `tta`
    the logits are V×B×C, one slice per symmetry of `d4_views` (the first the plain forward).
    Under `amp` the classifier head computes in float32 (`nn_utils.keep_head_fp32`)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if amp:
        keep_head_fp32(model)
    with eval_mode(model), torch.inference_mode():
        for xb, yb in loader:
            xb, yb = runtime.batch_to_device(xb, yb, device, channels_last)
            with runtime.autocast(device, amp):
                if tta:
                    out = torch.stack([model(v.contiguous(memory_format=fmt))
                                       for v in d4_views(xb)])
                else:
                    out = model(xb)
            yield out.float(), yb


def evaluate(model: nn.Module, loader, criterion=None, device=None, *, amp="auto") -> dict:
    """dict(loss, acc, bal_acc) of `model` over `loader` (eval mode, no gradients).

    `loss` is the sample-weighted mean of `criterion` (default cross-entropy) per batch; `acc` and
    `bal_acc` (mean per-class recall over the classes present) are fractions in [0, 1].
    `device=None` uses the model's device; `amp="auto"` evaluates in bf16 on CUDA. Loss sum,
    predictions and targets accumulate on the device: one host sync at the end.
    """
    device = model_device(model) if device is None else runtime.resolve_device(device)
    amp = runtime.resolve_flag(amp, "amp", device)
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    if isinstance(criterion, nn.Module):
        criterion = criterion.to(device)
    loss_sum, n, preds, targets = torch.zeros((), dtype=torch.float64, device=device), 0, [], []
    for out, yb in _forward_batches(model, loader, device, amp, runtime.is_channels_last(model)):
        loss_sum += criterion(out, yb).double() * yb.shape[0]
        n += yb.shape[0]
        preds.append(out.argmax(1))
        targets.append(yb)
    if n == 0:
        raise ValueError("the evaluation loader yielded no batches")
    y, p = torch.cat(targets).cpu().numpy(), torch.cat(preds).cpu().numpy()
    return {"loss": loss_sum.item() / n, "acc": float((y == p).mean()),
            "bal_acc": float(balanced_accuracy(y, p))}


def predict(model: nn.Module, loader, device=None, *, amp="auto") -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """(logits on the CPU, float32 N×C; targets on the CPU, int64 N) over `loader`, in order.
    `device=None` uses the model's device."""
    logits, _, targets = _predict(model, loader, device, amp, tta=False)
    return logits, targets


def predict_tta(model: nn.Module, loader, device=None, *, amp="auto"):
    """Test-time augmentation over the 8 symmetries of the square: (TTA logits — the log of the
    mean of the 8 views' softmax, so argmax, softmax and logit adjustment work on them as on
    logits —, the plain logits — the identity view —, targets), all on the CPU."""
    return _predict(model, loader, device, amp, tta=True)


def _predict(model, loader, device, amp, *, tta: bool):
    device = model_device(model) if device is None else runtime.resolve_device(device)
    amp = runtime.resolve_flag(amp, "amp", device)
    logits, plain, targets = [], [], []  # on the device until the end: one host sync
    channels_last = runtime.is_channels_last(model)
    for out, yb in _forward_batches(model, loader, device, amp, channels_last, tta):
        if tta:
            plain.append(out[0])
            out = out.log_softmax(-1).logsumexp(0) - math.log(out.shape[0])
        logits.append(out)
        targets.append(yb)
    if not logits:
        empty = torch.zeros(0, 0)
        return empty, (empty if tta else None), torch.zeros(0, dtype=torch.int64)
    return (torch.cat(logits).float().cpu(), torch.cat(plain).float().cpu() if tta else None,
            torch.cat(targets).long().cpu())


# --------------------------------------------------------------------------- fit


@dataclass
class _Fit:
    """The state of one `fit` call, shared by its steps."""

    model: nn.Module
    recipe: Recipe
    criterion: object
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    amp: bool
    channels_last: bool
    max_steps: int | None
    out: Path | None
    train_model: nn.Module | None = None  # the module the train steps call (compiled, or model)
    ema: object = None  # an ema.EMA, or None
    writer: checkpoints.CheckpointWriter | None = None  # best.pt / last.pt (with an out_dir)
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = -math.inf  # the best of the recipe's selection metric (`select`)
    best_raw_val_acc: float = -math.inf  # with `ema_raw`: the raw weights' best (best_raw.pt)
    start: int = 0  # epochs already done (a resumed run)

    @property
    def epochs(self) -> int:
        return int(self.recipe.epochs)

    @property
    def last_path(self) -> Path | None:
        return None if self.out is None else self.out / checkpoints.LAST

    @property
    def stored(self) -> dict:
        """What identifies this training inside its checkpoints: the recipe and the step cap."""
        return {"config": self.recipe.as_dict(), "max_steps": self.max_steps}


def fit(model: nn.Module, data, recipe: Recipe, *, out_dir=None, device=None, progress="auto",
        criterion=None, max_steps: int | None = None, amp="auto",
        checkpoint_every: float = checkpoints.CHECKPOINT_EVERY_S,
        compile_mode: str | None = None, channels_last: bool | None = None) -> list[dict]:
    """Train `model` on `data` = (train loader, val loader or None) by `recipe` (a
    `recipes.Recipe`: optimizer, LR table, epochs, mixing, EMA, seed), evaluating on the val
    loader after each epoch; return the history.

    - Loaders: any iterable of (x, y) batches with `len()` — the fast `BatchLoader` or a
      `torch.utils.data.DataLoader`. The train loader's `generator` (a torch.Generator), if any,
      is checkpointed (and draws the mixing). The recipe's batch and augmentation settings are the
      loaders' (`experiment.make_loader` builds them from it).
    - Optimizer and LR: `schedules.build_optimizer` / `schedules.build_scheduler`: the LR is a
      per-step table, the scheduler stepped after every optimizer step. Only parameters with
      `requires_grad` are trained.
    - `criterion`: any `(logits, targets) -> loss`; default the recipe's loss (`losses.build_loss`
      of `recipe.loss` and `recipe.loss_kw`; a loss that needs class counts must be passed).
    - `device`: None/"auto" = CUDA if available. `amp` "auto": bf16 autocast on CUDA (the
      classifier head in float32), float32 on the CPU (`run_experiment` passes the CPU probe's
      choice). channels_last on CUDA where `runtime.channels_last_for` chooses it for
      `recipe.model`, never on the CPU. On CUDA the optimizer is fused and cudnn.benchmark is on
      during the call.
    - `out_dir`: writes `best.pt` (the best of the recipe's selection metric `select`: val_acc or
      val_bal_acc; ties keep the earlier epoch; without a val loader the last epoch), then `last.pt` (the commit point) — at most once every `checkpoint_every`
      seconds, always after this call's first and last epoch and when it stops on an error or
      Ctrl-C (`hw2lib.train.checkpoints.CheckpointWriter`; 0: every epoch) —, and after every epoch
      `history.jsonl` (one JSON record per epoch); `run.json` (seed, versions, device, recipe)
      with the first epoch. Temp files of killed writes are removed at the start.
    - Resume: an `out_dir` holding a `last.pt` is continued from it (model, optimizer, scheduler,
      history, RNG states), so on the CPU the resumed epochs equal an uninterrupted run's
      exactly. When all epochs are done it returns the stored history without training (and
      loads the last weights into `model`); a recipe with more `epochs` extends the run, fewer is
      an error, and so is a last.pt of another recipe or step cap.
    - `progress`: "auto" (a tqdm bar per epoch when stderr is a terminal, else one line per epoch
      on stdout — papermill, notebooks, logs), "bar", "line", or False (silent).
    - `max_steps`: at most this many batches per epoch (smoke runs, benchmarks).
    - `channels_last`: the model and its batches in channels_last (None: `runtime`'s choice by
      device and model — on CUDA by model, never on the CPU; `run_experiment` passes the CPU
      probe's measured choice).
    - `compile_mode`: the train steps call `torch.compile(model, mode=compile_mode)` (e.g.
      "reduce-overhead": CUDA graphs, the launch lever of `hw2lib.train.gpu_levers`); the same
      parameters, evaluation and checkpoints stay eager. None: eager, as always.
    - `recipe.ema`: a decay in (0, 1) keeps an exponential moving average of the weights (see
      `hw2lib.train.ema`); it is what is evaluated each epoch and saved as best.pt (last.pt keeps
      both). With `recipe.ema_raw` the raw weights are evaluated too (`val_loss_raw`,
      `val_acc_raw`, `val_bal_acc_raw` in the history) and their best epoch saved as
      `best_raw.pt`: the EMA never feeds back into training, so "without EMA" is the same run's
      raw weights (a second forward pass each epoch: only where a lever reads it).

    History records (flat): epoch (1-based), lr (its first step's), train_loss, train_acc,
    val_loss, val_acc, val_bal_acc (None without a val loader), seconds (the epoch's wall time,
    train + eval), images_per_s (training images per second); with `ema_raw` also val_loss_raw,
    val_acc_raw and val_bal_acc_raw. Accuracies are fractions in [0, 1].

    Divergence raises `TrainingDiverged` naming the epoch: a NaN/inf training loss (and its step),
    a NaN/inf mean train or val loss, or NaN/inf in the weights, BatchNorm running statistics or
    optimizer state after an epoch. That epoch is never saved; the message names the last good
    checkpoint, if any.
    """
    train_loader, val_loader = data
    if not isinstance(recipe, Recipe):
        raise TypeError(f"fit takes a recipes.Recipe, got {type(recipe).__name__}: build one "
                        "with recipes.Recipe(...) or recipes.resolve(spec)")
    mode = prog.progress_mode(progress)
    n_steps = len(train_loader) if hasattr(train_loader, "__len__") else None
    if n_steps is not None and max_steps is not None:
        n_steps = min(n_steps, int(max_steps))
    if not n_steps:
        raise ValueError("fit needs a train loader with a len() (the LR schedule is a table of "
                         "optimizer steps, stepped after each): pass a BatchLoader or DataLoader")
    run = _setup(model, recipe, criterion=criterion, device=device, out_dir=out_dir, amp=amp,
                 max_steps=max_steps, steps_per_epoch=n_steps, checkpoint_every=checkpoint_every,
                 channels_last=channels_last)
    run.train_model = torch.compile(model, mode=compile_mode) if compile_mode else model
    if _resume(run, train_loader):
        return run.history  # every epoch was already done
    try:
        with runtime.cudnn_benchmark(run.device):
            for epoch in range(run.start + 1, run.epochs + 1):
                with prog.epoch_bar(mode, n_steps, epoch, run.epochs) as bar:
                    rec = _train_and_check(run, epoch, train_loader, val_loader, bar, n_steps)
                    _save_epoch(run, rec, train_loader)
                    prog.log_epoch(rec, run.epochs, mode, bar)
    finally:  # an error or Ctrl-C: the last completed epoch not yet on disk is written
        if run.writer is not None:
            run.writer.flush()
    return run.history


def _setup(model, recipe: Recipe, *, criterion, device, out_dir, amp, max_steps,
           steps_per_epoch: int, checkpoint_every: float, channels_last=None) -> _Fit:
    """Check the arguments; put model and criterion on the device; build optimizer and schedule;
    create `out_dir` and clear temp files of killed writes from it."""
    device = runtime.resolve_device(device)
    amp = runtime.resolve_flag(amp, "amp", device)
    if channels_last is None:
        channels_last = runtime.channels_last_for(model, device, recipe.model)
    if max_steps is not None and int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps!r}")
    check_mix(recipe.mix, recipe.mix_alpha)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if amp:  # logits in float32 under autocast (before the EMA copy is made)
        keep_head_fp32(model)
    if criterion is None:
        criterion = build_loss(recipe.loss, **recipe.loss_kw)
    if isinstance(criterion, nn.Module):
        criterion = criterion.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    opt = schedules.build_optimizer(params=params, device=device,
                                    **schedules.optimizer_kwargs(recipe))
    sched = schedules.build_scheduler(optimizer=opt, steps_per_epoch=steps_per_epoch,
                                      **schedules.schedule_kwargs(recipe))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temps(out)  # of writes killed half-way
    return _Fit(model=model, recipe=recipe, criterion=criterion, opt=opt, sched=sched,
                device=device, amp=amp, channels_last=channels_last,
                max_steps=None if max_steps is None else int(max_steps), out=out,
                ema=EMA(model, recipe.ema) if recipe.ema else None,
                writer=(checkpoints.CheckpointWriter(out, checkpoint_every)
                        if out is not None else None))


def _resume(run: _Fit, train_loader) -> bool:
    """Load `last.pt` (when there is one) into the run; True when all its epochs are done."""
    path = run.last_path
    if path is None or not path.exists():
        return False
    ckpt = checkpoints.load_checkpoint(path)
    checkpoints.check_same_training(ckpt, run.stored, path)
    done = int(ckpt["epoch"])
    if done > run.epochs:
        raise ValueError(
            f"cannot resume from {path} with epochs={run.epochs}: that run has already done "
            f"{done} epochs. Pass epochs >= {done} to continue it (epochs={done} returns its "
            "history), or use another out_dir for a shorter run.")
    run.model.load_state_dict(ckpt["model"])
    if run.ema is not None:
        run.ema.load_state_dict(ckpt["ema"])
    run.history, run.start = list(ckpt["history"]), done
    run.best_val_acc = float(ckpt["best_val_acc"])
    raw = f"val_{run.recipe.select}_raw"
    run.best_raw_val_acc = max((h[raw] for h in run.history if h.get(raw) is not None),
                               default=-math.inf)
    io.atomic_write_text(run.out / checkpoints.HISTORY, checkpoints.history_text(run.history))
    if done == run.epochs:
        return True
    run.opt.load_state_dict(ckpt["optimizer"])
    for group in run.opt.param_groups:  # this device's update, not the one that wrote last.pt
        if "fused" in group:
            group["fused"] = runtime.optimizer_options(run.device).get("fused")
    run.sched.load_state_dict(ckpt["scheduler"])
    runtime.set_rng_state(ckpt["rng"], train_loader)
    return False


def _train_and_check(run: _Fit, epoch: int, train_loader, val_loader, bar,
                     n_steps: int | None = None) -> dict:
    """Train one epoch (`n_steps` batches, when known), evaluate, and check that loss and state
    are finite: the epoch's history record, or `TrainingDiverged` naming the last good
    checkpoint (the pending one written first)."""
    t0, lr = time.perf_counter(), float(run.opt.param_groups[0]["lr"])
    mixer = None
    if run.recipe.mix != "none":
        gen = runtime.loader_generator(train_loader)
        if gen is None:
            raise ValueError("mix needs a train loader with a torch.Generator `generator` (the "
                             "BatchLoader): its draws must resume with the run")
        mixer = Mixer(run.recipe.mix, run.recipe.mix_alpha, gen, batches=n_steps)
    evaluated = run.model if run.ema is None else run.ema.model
    try:
        tr = train_one_epoch(run.train_model, run.criterion, run.opt, train_loader, run.device,
                             epoch=epoch, amp=run.amp, channels_last=run.channels_last,
                             max_steps=run.max_steps, bar=bar, mix=mixer, ema=run.ema,
                             scheduler=run.sched)
        val = (evaluate(evaluated, val_loader, run.criterion, run.device, amp=run.amp)
               if val_loader is not None else None)
        raw = (evaluate(run.model, val_loader, run.criterion, run.device, amp=run.amp)
               if val is not None and run.ema is not None and run.recipe.ema_raw
               else None)  # the EMA lever's row: only where the recipe asks for it
        losses = {"train loss": tr["loss"], **({"val loss": val["loss"]} if val else {})}
        check_epoch(epoch, losses, run.model, run.opt, run.device)
    except TrainingDiverged as exc:
        if run.out is None:
            raise
        run.writer.flush()  # the previous epoch, if it was not written yet
        good = checkpoints.last_good(run.out, epoch)
        raise TrainingDiverged(f"{exc} Last good checkpoint: {good}.") from None
    return {"epoch": epoch, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"],
            "val_loss": val["loss"] if val else None, "val_acc": val["acc"] if val else None,
            "val_bal_acc": val["bal_acc"] if val else None,
            **({"val_loss_raw": raw["loss"], "val_acc_raw": raw["acc"],
                "val_bal_acc_raw": raw["bal_acc"]} if raw else {}),
            "seconds": time.perf_counter() - t0,
            "images_per_s": tr["images"] / max(tr["seconds"], 1e-9)}


def _save_epoch(run: _Fit, rec: dict, train_loader) -> None:
    """Append the record to the history; with an out_dir hand best.pt (when best) and last.pt (the
    epoch's commit point) to the run's `CheckpointWriter` (written now or later, by time), and
    write history.jsonl — and run.json with this call's first epoch."""
    run.history.append(rec)
    val_acc = rec[f"val_{run.recipe.select}"]  # the selection metric (accuracy or balanced)
    is_best = val_acc is None or val_acc > run.best_val_acc
    if val_acc is not None:
        run.best_val_acc = max(run.best_val_acc, val_acc)
    if run.out is None:
        return
    if rec["epoch"] == run.start + 1:
        _write_run_json(run)
    common = {"model": run.model.state_dict(), "epoch": rec["epoch"],
              "best_val_acc": run.best_val_acc, **run.stored, "history": run.history}
    best = None
    if is_best:  # written before last.pt: last.pt is the commit point of an epoch
        evaluated = run.model if run.ema is None else run.ema.model  # the weights evaluated
        best = {**common, "model": evaluated.state_dict(), "val_acc": val_acc}
    extra = {"ema": run.ema.state_dict()} if run.ema is not None else {}
    others = {}
    raw = rec.get(f"val_{run.recipe.select}_raw")
    if raw is not None and raw > run.best_raw_val_acc:
        run.best_raw_val_acc = raw  # the raw weights' best: before last.pt
        others["best_raw.pt"] = {**common, "val_acc": raw}
    last = {**common, "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
            "rng": runtime.rng_state(train_loader), **extra}
    run.writer.epoch(last, best, force=rec["epoch"] == run.epochs, others=others)
    io.atomic_write_text(run.out / checkpoints.HISTORY, checkpoints.history_text(run.history))


def _write_run_json(run: _Fit) -> None:
    info = {"seed": run.recipe.seed, **runtime.run_info(run.device),
            "amp": "bf16" if run.amp else None, "channels_last": run.channels_last, **run.stored}
    checkpoints.write_run_json(run.out, info, resumed_from=run.start)
