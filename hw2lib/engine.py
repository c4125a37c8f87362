"""The training engine: optimizers, per-epoch LR schedules, `fit` (train + evaluate each epoch,
history as JSON lines, atomic checkpoints, exact resume), `evaluate`, `predict`, seeding, run info.

Shaped like torchvision's `references/classification`: `train_step`, `train_one_epoch` and
`evaluate` are plain functions; `fit` is a short loop over named steps (`_setup`, `_resume`,
`_train_and_check`, `_save_epoch`, `_log_epoch`). Device-agnostic: on CUDA it trains under bf16
autocast (the classifier head in float32), channels_last where the model gains from it
(`runtime.channels_last_for`), fused optimizers and cudnn.benchmark (optionally
`torch.compile`d); on the CPU in plain float32.

Checkpoints are plain dicts of CPU tensors and built-in types, loadable on any machine with
`torch.load(path, weights_only=True)` (`hw2lib.checkpoints` writes them):

- ``last.pt`` — everything needed to resume: model, optimizer and scheduler state, epoch, best
  validation accuracy, history, config, and the RNG states (torch CPU/CUDA, Python, NumPy and the
  train loader's `generator`). Written by time — at most once every `checkpoint_every` seconds,
  and always after the first and the last epoch of a `fit` call and when training stops on an
  error or Ctrl-C; an epoch not yet written waits in memory. Resuming from it is exact.
- ``best.pt`` — the weights of the epoch with the best validation accuracy (the last epoch when
  there is no validation loader), with epoch, config and history; no optimizer state (it is for
  evaluation, and halves the disk a study of many runs needs).

Both are written atomically (`hw2lib.io.atomic_write`) and only for an epoch whose losses, weights,
BatchNorm statistics and optimizer state are all finite: a diverged epoch raises
`TrainingDiverged` and is never saved.
"""

from __future__ import annotations

import math
import platform
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hw2lib import checkpoints, io
from hw2lib.constants import OPTIMIZERS, PER_STEP_SCHEDULES, SCHEDULES
from hw2lib.io import CorruptFileError
from hw2lib.nn_utils import eval_mode, keep_head_fp32, model_device
from hw2lib.runtime import channels_last_for, cudnn_benchmark, optimizer_options

# checkpoint files live in hw2lib.checkpoints; these stay importable from here
load_checkpoint, read_history = checkpoints.load_checkpoint, checkpoints.read_history
PROGRESS_MODES = ("auto", "bar", "line")
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc",
                "seconds", "images_per_s")


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf (a loss, the weights, BatchNorm statistics or optimizer state);
    the message names the epoch (and step), what was non-finite and the last good checkpoint."""


# --------------------------------------------------------------------------- seeds, device, info


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's legacy global RNG and torch (CPU and every CUDA device).

    The one place global seeds are set: run entry points and notebooks call it once, before
    building models and loaders. Library functions use local generators instead.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device=None) -> torch.device:
    """`None`/"auto" -> CUDA when available, else the CPU; a string or torch.device otherwise.

    Asking for CUDA where there is none is an error (rather than a silent CPU run).
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; "
                         "use device='auto' or 'cpu'")
    return dev


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:  # Linux: the CPU's marketing name; platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or dev.type


def run_info(device=None) -> dict:
    """Versions (python, torch, torchvision, numpy, hw2lib), platform and the device's name."""
    import hw2lib

    dev = resolve_device(device)
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a dependency
        tv = None
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": tv,
            "numpy": np.__version__, "hw2lib": hw2lib.__version__,
            "platform": platform.platform(), "device": str(dev),
            "device_name": _device_name(dev), "cuda": torch.version.cuda,
            "cpu_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- optimizers, schedules


def build_optimizer(name: str, params, *, lr: float, momentum: float = 0.9, nesterov: bool = False,
                    weight_decay: float = 0.0, betas=(0.9, 0.999),
                    device=None) -> torch.optim.Optimizer:
    """`sgd` (momentum, optional Nesterov, L2 weight decay), `adam` (L2 weight decay) or `adamw`
    (decoupled weight decay). `params`: parameters or parameter groups. `device`: where they
    live, for `runtime.optimizer_options` (fused on CUDA)."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}. Choices: {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    opts = optimizer_options(device) if device is not None else {}
    if key == "sgd":
        if nesterov and momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0 (got momentum="
                             f"{momentum}); set momentum or nesterov=False")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov,
                               weight_decay=weight_decay, **opts)
    cls = torch.optim.Adam if key == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **opts)


def _schedule_factor(name: str, *, base_lr: float, epochs: int, milestones, gamma: float,
                     warmup_epochs: int, eta_min: float):
    """The multiplicative LR factor of epoch e (0-based) — see `build_scheduler`."""
    w, total = warmup_epochs, max(epochs - warmup_epochs, 1)
    ms = tuple(int(m) for m in milestones)

    def factor(e: int) -> float:
        warm = (e + 1) / (w + 1) if e < w else 1.0
        t = max(e - w, 0)
        if name == "multistep":
            main = gamma ** sum(1 for m in ms if m <= e)
        elif name == "cosine":
            if base_lr == 0:
                main = 1.0
            else:
                main = (eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / total)) / 2
                        ) / base_lr
        elif name == "exponential":
            main = gamma**t
        else:
            main = 1.0
        return warm * main

    return factor


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, epochs: int, milestones=(),
                    gamma: float = 0.1, warmup_epochs: int = 0, eta_min: float = 0.0,
                    steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-epoch LR schedule: call `.step()` once at the end of every epoch — except
    ``onecycle``, stepped after every optimizer step (`steps_per_epoch` of them per epoch).

    With ``lr`` the optimizer's LR, ``e`` the 0-based epoch, ``w = warmup_epochs``,
    ``t = max(e - w, 0)`` and ``T = max(epochs - w, 1)``, epoch ``e`` trains at
    ``lr * warm(e) * main(e)``:

    - warmup: ``warm(e) = (e + 1) / (w + 1)`` for ``e < w`` (a linear ramp lr/(w+1), 2·lr/(w+1), …,
      w·lr/(w+1); epoch ``w`` is the first at the full schedule), else 1. With
      ``warmup_epochs >= epochs`` the whole run is warmup (smoke runs).
    - ``none``: ``main = 1`` (constant LR).
    - ``multistep``: ``main = gamma ** #{m in milestones : m <= e}`` — milestones are absolute
      0-based epochs (as in `MultiStepLR`): [80, 120, 160] decays from epoch 80 on.
    - ``cosine``: ``lr·main = eta_min + (lr - eta_min)·(1 + cos(pi·t/T))/2`` — `CosineAnnealingLR`
      with ``T_max = T`` after the warmup: the first epoch after warmup trains at ``lr`` and the LR
      reaches ``eta_min`` after the last epoch's step.
    - ``exponential``: ``main = gamma ** t`` — gamma is the factor per epoch.
    - ``onecycle``: ``cosine`` with its warm-up, counted in steps instead of epochs (a linear ramp
      over ``w·steps_per_epoch`` steps, then a cosine to ``eta_min`` at the last step): the
      one-cycle shape, which suits short runs (the LR reaches ``eta_min`` within the run).

    Implemented as one `LambdaLR` of that closed form, so its `state_dict` (built-in types only)
    resumes exactly.
    """
    key = str(name).lower()
    if key not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}. Choices: {', '.join(SCHEDULES)}")
    epochs, warmup_epochs = int(epochs), int(warmup_epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    milestones = tuple(milestones or ())
    if key in PER_STEP_SCHEDULES:
        if int(steps_per_epoch) < 1:
            raise ValueError(f"schedule={key!r} needs steps_per_epoch >= 1, got {steps_per_epoch}")
        epochs, warmup_epochs = epochs * int(steps_per_epoch), warmup_epochs * int(steps_per_epoch)
        key = "cosine"
    if key == "multistep":
        if not milestones:
            raise ValueError("schedule='multistep' needs milestones (0-based epochs at which the "
                             "LR is multiplied by gamma), e.g. milestones=(80, 120, 160)")
        if any(int(m) < 0 for m in milestones):
            raise ValueError(f"milestones must be non-negative epochs, got {list(milestones)}")
    if key in ("multistep", "exponential") and not gamma > 0:
        raise ValueError(f"gamma must be positive for schedule={key!r}, got {gamma!r}")
    factors = [
        _schedule_factor(key, base_lr=g.get("initial_lr", g["lr"]), epochs=epochs,
                         milestones=milestones, gamma=float(gamma), warmup_epochs=warmup_epochs,
                         eta_min=float(eta_min))
        for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def lr_schedule(name: str, *, lr: float, epochs: int, **kw) -> list[float]:
    """The LR of each epoch (for plots), read off a real scheduler stepped on a dummy optimizer.
    Keywords: those of `build_scheduler` (milestones, gamma, warmup_epochs, eta_min)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(name, opt, epochs=epochs, **kw)
    out = []
    for _ in range(int(epochs)):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    return out


# --------------------------------------------------------------------------- helpers


def _is_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _resolve_flag(value, name: str, device: torch.device) -> bool:
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{name} must be 'auto', True or False, got {value!r}")
        return device.type == "cuda"
    return bool(value)


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _to_device(xb, yb, device, channels_last: bool):
    if channels_last and xb.dim() == 4:
        xb = xb.to(device, non_blocking=True, memory_format=torch.channels_last)
    else:
        xb = xb.to(device, non_blocking=True)
    return xb, yb.to(device, non_blocking=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _len(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _loader_generator(loader) -> torch.Generator | None:
    gen = getattr(loader, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


def _rng_state(loader) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    gen = _loader_generator(loader)
    if gen is not None:
        state["loader"] = gen.get_state()
    return state


def _set_rng_state(state: dict, loader) -> None:
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    gen = _loader_generator(loader)
    if gen is not None and "loader" in state:
        gen.set_state(state["loader"])


def _progress_mode(progress) -> str | None:
    if progress is False or progress is None:
        return None
    if progress is True:
        progress = "auto"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES} or True/False, "
                         f"got {progress!r}")
    if progress == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return "bar" if isatty is not None and isatty() else "line"
    return progress


def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def format_epoch(rec: dict, epochs: int) -> str:
    """One concise line per epoch, e.g.
    ``epoch 3/10  lr 0.1  train 0.812/71.2%  val 0.701/75.3% (bal 74.9%)  12.3s  1,234 img/s``."""
    s = (f"epoch {rec['epoch']}/{epochs}  lr {rec['lr']:.4g}  "
         f"train {rec['train_loss']:.3f}/{_fmt_pct(rec['train_acc'])}")
    if rec.get("val_acc") is not None:
        s += (f"  val {rec['val_loss']:.3f}/{_fmt_pct(rec['val_acc'])} "
              f"(bal {_fmt_pct(rec['val_bal_acc'])})")
    return s + f"  {rec['seconds']:.1f}s  {rec['images_per_s']:,.0f} img/s"


# --------------------------------------------------------------------------- train / evaluate


def train_step(model: nn.Module, criterion, optimizer, xb, yb, device: torch.device, *,
               amp: bool = False, channels_last: bool = False, mix=None):
    """One optimization step on one batch: move it to `device`, (mix it: `mix` is a
    `mixing.Mixer`, the loss then λ·loss(y) + (1 − λ)·loss(y_partner)), forward (under bf16
    autocast when `amp`), backward, `optimizer.step()`. Returns (loss, logits, targets), detached
    and still on the device: nothing here waits for the device (no `.item()`), so steps queue up
    on CUDA."""
    xb, yb = _to_device(xb, yb, device, channels_last)
    if mix is not None:
        xb, yb, y_partner, lam = mix(xb, yb)
    with _autocast(device, amp):
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
                    max_steps: int | None = None, bar=None, check_every: int = 50, mix=None,
                    ema=None, step_scheduler=None) -> dict:
    """One pass over `loader` (at most `max_steps` batches) of `train_step`s: dict(loss, acc,
    images, seconds) — loss the sample-weighted mean, acc a fraction (on mixed batches, against
    each sample's own label). `mix`: see `train_step`; `ema`: an `ema.EMA` updated after every
    step; `step_scheduler`: an LR scheduler stepped after every step (per-step schedules).

    Loss sum and correct count accumulate on the device; the losses are checked for NaN/inf in
    batches of `check_every` steps and at the end (the only host syncs), so a `TrainingDiverged`
    comes at most `check_every - 1` steps late but still names the first bad step.
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
        if step_scheduler is not None:
            step_scheduler.step()
        step += 1
        n = yb.shape[0]
        images += n
        pending.append(loss.float())
        loss_sum += loss.double() * n
        correct += (out.argmax(1) == yb).sum()
        if step % check_every == 0:
            check(step)
        if bar is not None:
            bar.update(1)
    if pending:
        check(step)
    _sync(device)
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
            xb, yb = _to_device(xb, yb, device, channels_last)
            with _autocast(device, amp):
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
    from hw2lib.metrics import balanced_accuracy  # lazily: it imports scikit-learn

    device = model_device(model) if device is None else resolve_device(device)
    amp = _resolve_flag(amp, "amp", device)
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    if isinstance(criterion, nn.Module):
        criterion = criterion.to(device)
    loss_sum, n, preds, targets = torch.zeros((), dtype=torch.float64, device=device), 0, [], []
    for out, yb in _forward_batches(model, loader, device, amp, _is_channels_last(model)):
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
    device = model_device(model) if device is None else resolve_device(device)
    amp = _resolve_flag(amp, "amp", device)
    logits, plain, targets = [], [], []  # on the device until the end: one host sync
    for out, yb in _forward_batches(model, loader, device, amp, _is_channels_last(model), tta):
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


# --------------------------------------------------------------------------- finite checks


def _nonfinite_tensors(model: nn.Module, optimizer, device: torch.device) -> list[str]:
    """Names of the model's parameters/buffers (BatchNorm running stats included) and optimizer
    state tensors holding NaN or inf: one host sync for all of them."""
    named = [(f"model.{k}", v) for k, v in model.state_dict().items() if v.is_floating_point()]
    for i, state in optimizer.state_dict()["state"].items():
        named += [(f"optimizer.state[{i}].{k}", v) for k, v in state.items()
                  if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(v).all().to(device) for _, v in named]).tolist()
    return [name for (name, _), good in zip(named, ok, strict=True) if not good]


# --------------------------------------------------------------------------- fit


@dataclass
class _Run:
    """The state of one `fit` call, shared by its steps."""

    model: nn.Module
    net: nn.Module  # `model`, or its torch.compile'd wrapper
    criterion: object
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    amp: bool
    channels_last: bool
    compile: bool
    epochs: int
    max_steps: int | None
    out: Path | None
    fit_args: dict
    config: dict
    seed: int | None
    mix_kind: str = "none"
    mix_alpha: float = 1.0
    ema: object = None  # an ema.EMA, or None
    per_step: bool = False  # the LR schedule steps after every batch
    writer: checkpoints.CheckpointWriter | None = None  # best.pt / last.pt (with an out_dir)
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = -math.inf
    best_raw_val_acc: float = -math.inf  # with an EMA: the raw weights' best (best_raw.pt)
    start: int = 0  # epochs already done (a resumed run)

    @property
    def last_path(self) -> Path | None:
        return None if self.out is None else self.out / "last.pt"


def fit(model: nn.Module, train_loader, val_loader=None, *, epochs: int, optimizer: str = "sgd",
        lr: float = 0.1, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 5e-4, schedule: str = "none", milestones=(), gamma: float = 0.1,
        warmup_epochs: int = 0, criterion=None, device=None, out_dir=None, resume: bool = False,
        amp="auto", channels_last="auto", compile: bool = False, config: dict | None = None,
        seed: int | None = None, progress="auto", max_steps: int | None = None,
        eta_min: float = 0.0, mix: str = "none", mix_alpha: float = 1.0,
        ema: float = 0.0, checkpoint_every: float = checkpoints.CHECKPOINT_EVERY_S) -> list[dict]:
    """Train `model` for `epochs` epochs, evaluating on `val_loader` after each; return the history.

    - `train_loader`: any iterable of (x, y) batches with `len()` — the fast `BatchLoader` or a
      `torch.utils.data.DataLoader`. Its `generator` (a torch.Generator), if any, is checkpointed.
    - Optimizer and schedule: see `build_optimizer` / `build_scheduler` (the schedule steps once
      per epoch; `eta_min` is cosine's floor). Only parameters with `requires_grad` are trained.
    - `criterion`: any `(logits, targets) -> loss` (default cross-entropy), moved to the device.
    - `device`: None/"auto" = CUDA if available. `amp` "auto": bf16 autocast on CUDA (the
      classifier head in float32), plain float32 on the CPU. `channels_last` "auto": on CUDA
      where `runtime.channels_last_for` chooses it for the model (`config["model"]` names it),
      never on the CPU. `compile`: `torch.compile`. On CUDA the optimizer is fused and
      cudnn.benchmark is on during the call.
    - `out_dir`: writes `best.pt` (best val_acc, ties keep the earlier epoch; without a val loader
      the last epoch), then `last.pt` (the commit point) — at most once every `checkpoint_every`
      seconds, always after this call's first and last epoch and when it stops on an error or
      Ctrl-C (`hw2lib.checkpoints.CheckpointWriter`; 0: every epoch) —, and after every epoch
      `history.jsonl` (one JSON record per epoch); `run.json` (seed, versions, device, config,
      fit arguments) with the first epoch. Temp files of killed writes are removed at the start.
      A fresh run (resume=False) replaces an earlier run's files only as its own first epoch
      completes: until then they stay as they were.
    - `resume=True` continues from `out_dir/last.pt` (model, optimizer, scheduler, history, RNG
      states), so on the CPU the resumed epochs equal an uninterrupted run's exactly. When all
      `epochs` are already done it returns the stored history without training (and loads the
      last weights into `model`); more `epochs` than were done extend the run; fewer is an error,
      as is resuming with different hyperparameters or `config` (other than `epochs`).
    - `config`: the experiment's settings (built-in types), stored in checkpoints and run.json.
      `seed` is recorded only: seed with `seed_everything` before building model and loaders.
    - `progress`: "auto" (a tqdm bar per epoch when stderr is a terminal, else one line per epoch
      on stdout — papermill, notebooks, logs), "bar", "line", or False (silent).
    - `max_steps`: at most this many batches per epoch (smoke runs, benchmarks).
    - `mix`: "none", "mixup", "cutmix" or "both" with Beta(`mix_alpha`, ·) factors (see
      `hw2lib.mixing`), drawn from the train loader's generator.
    - `ema`: a decay in (0, 1) keeps an exponential moving average of the weights (see
      `hw2lib.ema`); it is what is evaluated each epoch and saved as best.pt (last.pt keeps both).
      The raw weights are evaluated too (`val_loss_raw`, `val_acc_raw` in the history) and their
      best epoch saved as `best_raw.pt`: the EMA never feeds back into training, so "without EMA"
      is the same run's raw weights.

    History records (flat): epoch (1-based), lr, train_loss, train_acc, val_loss, val_acc,
    val_bal_acc (None without a val loader), seconds (the epoch's wall time, train + eval),
    images_per_s (training images per second). Accuracies are fractions in [0, 1].

    Divergence raises `TrainingDiverged` naming the epoch: a NaN/inf training loss (and its step),
    a NaN/inf mean train or val loss, or NaN/inf in the weights, BatchNorm running statistics or
    optimizer state after an epoch. That epoch is never saved; the message names the last good
    checkpoint, if any.
    """
    hyper = {"epochs": int(epochs), "optimizer": str(optimizer).lower(), "lr": lr,
             "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
             "schedule": str(schedule).lower(), "milestones": list(milestones or ()),
             "gamma": gamma, "warmup_epochs": warmup_epochs, "eta_min": eta_min,
             "max_steps": max_steps, "criterion": type(criterion).__name__
             if criterion is not None else "CrossEntropyLoss"}
    if mix != "none":  # only when used: checkpoints of runs without them resume as before
        hyper.update(mix=str(mix), mix_alpha=float(mix_alpha))
    if ema:
        hyper["ema"] = float(ema)
    mode = _progress_mode(progress)
    n_steps = _len(train_loader)
    if n_steps is not None and max_steps is not None:
        n_steps = min(n_steps, int(max_steps))
    per_step = hyper["schedule"] in PER_STEP_SCHEDULES
    if per_step and not n_steps:
        raise ValueError(f"schedule={hyper['schedule']!r} is stepped per batch: it needs a train "
                         "loader with a len()")
    run = _setup(model, hyper, criterion=criterion, device=device, out_dir=out_dir, resume=resume,
                 amp=amp, channels_last=channels_last, compile=compile, config=config, seed=seed,
                 steps_per_epoch=n_steps if per_step else 1, checkpoint_every=checkpoint_every)
    if resume and _resume(run, train_loader):
        return run.history  # every epoch was already done
    try:
        with cudnn_benchmark(run.device):
            for epoch in range(run.start + 1, run.epochs + 1):
                with _epoch_bar(mode, n_steps, epoch, run.epochs) as bar:
                    rec = _train_and_check(run, epoch, train_loader, val_loader, bar, n_steps)
                    if not per_step:
                        run.sched.step()
                    _save_epoch(run, rec, train_loader)
                    _log_epoch(rec, run.epochs, mode, bar)
    finally:  # an error or Ctrl-C: the last completed epoch not yet on disk is written
        if run.writer is not None:
            run.writer.flush()
    return run.history


def _setup(model, hyper: dict, *, criterion, device, out_dir, resume, amp, channels_last, compile,
           config, seed, steps_per_epoch: int = 1,
           checkpoint_every: float = checkpoints.CHECKPOINT_EVERY_S) -> _Run:
    """Check the arguments; put model and criterion on the device; build optimizer and schedule;
    create `out_dir` and clear temp files of killed writes from it."""
    device = resolve_device(device)
    amp = _resolve_flag(amp, "amp", device)
    if channels_last == "auto":  # a per-model choice (runtime.CHANNELS_LAST_ON_CUDA)
        channels_last = channels_last_for(model, device, (config or {}).get("model"))
    channels_last = _resolve_flag(channels_last, "channels_last", device)
    max_steps = hyper["max_steps"]
    if max_steps is not None and int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps!r}")
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where last.pt lives)")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if amp:  # logits in float32 under autocast (before the EMA copy is made)
        keep_head_fp32(model)
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    if isinstance(criterion, nn.Module):
        criterion = criterion.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    opt = build_optimizer(hyper["optimizer"], params, lr=hyper["lr"], momentum=hyper["momentum"],
                          nesterov=hyper["nesterov"], weight_decay=hyper["weight_decay"],
                          device=device)
    sched = build_scheduler(hyper["schedule"], opt, epochs=hyper["epochs"],
                            milestones=hyper["milestones"], gamma=hyper["gamma"],
                            warmup_epochs=hyper["warmup_epochs"], eta_min=hyper["eta_min"],
                            steps_per_epoch=steps_per_epoch)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_stale_temps(out)
    from hw2lib.ema import EMA
    from hw2lib.mixing import check_mix

    check_mix(hyper.get("mix", "none"), hyper.get("mix_alpha", 1.0))
    return _Run(model=model, net=torch.compile(model) if compile else model, criterion=criterion,
                opt=opt, sched=sched, device=device, amp=amp, channels_last=channels_last,
                compile=bool(compile), epochs=hyper["epochs"], max_steps=max_steps, out=out,
                fit_args=io.to_builtin(hyper),
                config=io.to_builtin(config) if config is not None else {}, seed=seed,
                mix_kind=hyper.get("mix", "none"), mix_alpha=hyper.get("mix_alpha", 1.0),
                ema=EMA(model, hyper["ema"]) if hyper.get("ema") else None,
                per_step=hyper["schedule"] in PER_STEP_SCHEDULES,
                writer=(checkpoints.CheckpointWriter(out, checkpoint_every)
                        if out is not None else None))


def _resume(run: _Run, train_loader) -> bool:
    """Load `last.pt` (when there is one) into the run; True when all its epochs are done."""
    path = run.last_path
    if not path.exists():
        return False
    ckpt = load_checkpoint(path)
    checkpoints.check_same_run(ckpt, run.fit_args, run.config, path)
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
    run.best_raw_val_acc = max((h["val_acc_raw"] for h in run.history
                                if h.get("val_acc_raw") is not None), default=-math.inf)
    io.atomic_write_text(run.out / "history.jsonl", checkpoints.history_text(run.history))
    if done == run.epochs:
        return True
    run.opt.load_state_dict(ckpt["optimizer"])
    run.sched.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"], train_loader)
    return False


@contextmanager
def _epoch_bar(mode: str | None, total: int | None, epoch: int, epochs: int):
    """A tqdm bar on stderr for the epoch in "bar" mode (closed however the epoch ends), else
    None."""
    if mode != "bar":
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", leave=True, file=sys.stderr,
               dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def _train_and_check(run: _Run, epoch: int, train_loader, val_loader, bar,
                     n_steps: int | None = None) -> dict:
    """Train one epoch (`n_steps` batches, when known), evaluate, and check that loss and state
    are finite: the epoch's history record, or `TrainingDiverged` naming the last good
    checkpoint (the pending one written first)."""
    from hw2lib.mixing import Mixer

    t0, lr = time.perf_counter(), float(run.opt.param_groups[0]["lr"])
    mixer = None
    if run.mix_kind != "none":
        gen = _loader_generator(train_loader)
        if gen is None:
            raise ValueError("mix needs a train loader with a torch.Generator `generator` (the "
                             "BatchLoader): its draws must resume with the run")
        mixer = Mixer(run.mix_kind, run.mix_alpha, gen, batches=n_steps)
    evaluated = run.net if run.ema is None else run.ema.model
    try:
        tr = train_one_epoch(run.net, run.criterion, run.opt, train_loader, run.device,
                             epoch=epoch, amp=run.amp, channels_last=run.channels_last,
                             max_steps=run.max_steps, bar=bar, mix=mixer, ema=run.ema,
                             step_scheduler=run.sched if run.per_step else None)
        val = (evaluate(evaluated, val_loader, run.criterion, run.device, amp=run.amp)
               if val_loader is not None else None)
        raw = (evaluate(run.net, val_loader, run.criterion, run.device, amp=run.amp)
               if val is not None and run.ema is not None else None)  # the EMA lever's row
        losses = {"train loss": tr["loss"], **({"val loss": val["loss"]} if val else {})}
        bad = [f"{k} {v}" for k, v in losses.items() if not math.isfinite(v)]
        tensors = _nonfinite_tensors(run.model, run.opt, run.device)
        if tensors:
            more = f" (and {len(tensors) - 3} more)" if len(tensors) > 3 else ""
            bad.append(f"NaN/inf in {', '.join(tensors[:3])}{more}")
        if bad:
            raise TrainingDiverged(f"training diverged at epoch {epoch}: {'; '.join(bad)}; lower "
                                   "the learning rate, add warmup or check the inputs.")
    except TrainingDiverged as exc:
        if run.out is None:
            raise
        run.writer.flush()  # the previous epoch, if it was not written yet
        good = checkpoints.last_good(run.out, epoch)
        raise TrainingDiverged(f"{exc} Last good checkpoint: {good}.") from None
    return {"epoch": epoch, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"],
            "val_loss": val["loss"] if val else None, "val_acc": val["acc"] if val else None,
            "val_bal_acc": val["bal_acc"] if val else None,
            **({"val_loss_raw": raw["loss"], "val_acc_raw": raw["acc"]} if raw else {}),
            "seconds": time.perf_counter() - t0,
            "images_per_s": tr["images"] / max(tr["seconds"], 1e-9)}


def _save_epoch(run: _Run, rec: dict, train_loader) -> None:
    """Append the record to the history; with an out_dir hand best.pt (when best) and last.pt (the
    epoch's commit point) to the run's `CheckpointWriter` (written now or later, by time), and
    write history.jsonl — and run.json with this call's first epoch."""
    run.history.append(rec)
    val_acc = rec["val_acc"]
    is_best = val_acc is None or val_acc > run.best_val_acc
    if val_acc is not None:
        run.best_val_acc = max(run.best_val_acc, val_acc)
    if run.out is None:
        return
    if rec["epoch"] == run.start + 1:
        if run.start == 0:  # a fresh run: an earlier run's last.pt must not look resumable
            run.last_path.unlink(missing_ok=True)  # (its best.pt is replaced just below)
        _write_run_json(run)
    common = {"model": run.model.state_dict(), "epoch": rec["epoch"],
              "best_val_acc": run.best_val_acc, "config": run.config, "fit_args": run.fit_args,
              "history": run.history, "seed": run.seed}
    best = None
    if is_best:  # written before last.pt: last.pt is the commit point of an epoch
        evaluated = run.model if run.ema is None else run.ema.model  # the weights evaluated
        best = {**common, "model": evaluated.state_dict(), "val_acc": val_acc}
    extra = {"ema": run.ema.state_dict()} if run.ema is not None else {}
    others = {}
    if rec.get("val_acc_raw") is not None and rec["val_acc_raw"] > run.best_raw_val_acc:
        run.best_raw_val_acc = rec["val_acc_raw"]  # the raw weights' best: before last.pt
        others["best_raw.pt"] = {**common, "val_acc": rec["val_acc_raw"]}
    last = {**common, "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
            "rng": _rng_state(train_loader), **extra}
    run.writer.epoch(last, best, force=rec["epoch"] == run.epochs, others=others)
    io.atomic_write_text(run.out / "history.jsonl", checkpoints.history_text(run.history))


def _log_epoch(rec: dict, epochs: int, mode: str | None, bar) -> None:
    line = format_epoch(rec, epochs)
    if bar is not None:
        bar.set_postfix_str(line.split("  ", 1)[1], refresh=True)
    elif mode == "line":
        print(line, flush=True)


def _write_run_json(run: _Run) -> None:
    path = run.out / "run.json"
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    info = {"seed": run.seed, **run_info(run.device), "amp": "bf16" if run.amp else None,
            "channels_last": run.channels_last, "compile": run.compile, "config": run.config,
            "fit_args": run.fit_args, "started": now}
    if run.start and path.exists():
        try:
            prev = io.read_json(path, what="run record")
        except CorruptFileError:
            prev = {}  # rewritten below; the checkpoints hold the run's settings too
        info["started"] = prev.get("started", now)
        info["resumes"] = [*prev.get("resumes", []),
                           {"epoch": run.start, "at": now, "device": info["device"],
                            "device_name": info["device_name"]}]
    io.write_json(path, info)
