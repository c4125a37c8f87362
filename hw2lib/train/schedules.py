"""Optimizers and the one learning-rate rule: a table of the LR of every optimizer step.

Every schedule is a closed form of the 0-based optimizer step (as airbench's `triangle` or
nanoGPT's `get_lr`), and `fit` steps its scheduler after every optimizer step. The per-epoch
schedules (``none``, ``multistep``, ``cosine``, ``exponential``) are constant within an epoch:
step ``s`` of an epoch of ``n`` steps trains at the LR of epoch ``s // n``. ``onecycle`` is a
linear warm-up then a cosine to 0, both counted in steps (not torch's `OneCycleLR`:
the config value keeps its name so that existing runs keep their identity). `lr_table` reads the
table off the very scheduler `fit` builds, so a plot of it is what training used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hw2lib.core.constants import OPTIMIZERS, SCHEDULES
from hw2lib.core.runtime import optimizer_options


def build_optimizer(name: str, params, *, lr: float, momentum: float = 0.9, nesterov: bool = False,
                    weight_decay: float = 0.0, device=None) -> torch.optim.Optimizer:
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
    return cls(params, lr=lr, weight_decay=weight_decay, **opts)


def _factor(name: str, *, base_lr: float, epochs: int, milestones, gamma: float,
            warmup_epochs: int):
    """The multiplicative LR factor of period e (0-based) of `epochs` periods — see
    `build_scheduler`."""
    w, total = warmup_epochs, max(epochs - warmup_epochs, 1)
    ms = tuple(int(m) for m in milestones)

    def factor(e: int) -> float:
        warm = (e + 1) / (w + 1) if e < w else 1.0
        t = max(e - w, 0)
        if name == "multistep":
            main = gamma ** sum(1 for m in ms if m <= e)
        elif name == "cosine":  # lr·(1 + cos)/2 over lr, rounded as the table always was
            main = (base_lr * (1 + math.cos(math.pi * t / total)) / 2) / base_lr if base_lr else 1.0
        elif name == "exponential":
            main = gamma**t
        else:
            main = 1.0
        return warm * main

    return factor


def _step_factor(name: str, *, steps_per_epoch: int, epochs: int, warmup_epochs: int, **kw):
    """The factor of optimizer step s (0-based): ``onecycle`` counts its warm-up and cosine in
    steps; the other schedules take their epoch's factor (constant within the epoch)."""
    n = steps_per_epoch
    if name == "onecycle":
        return _factor("cosine", epochs=epochs * n, warmup_epochs=warmup_epochs * n, **kw)
    per_epoch = _factor(name, epochs=epochs, warmup_epochs=warmup_epochs, **kw)
    return lambda s: per_epoch(s // n)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, epochs: int,
                    steps_per_epoch: int, milestones=(), gamma: float = 0.1,
                    warmup_epochs: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """The LR schedule as a per-step table: call `.step()` after every optimizer step
    (`steps_per_epoch` of them an epoch).

    With ``lr`` the optimizer's LR, ``e`` the 0-based epoch of the step, ``w = warmup_epochs``,
    ``t = max(e - w, 0)`` and ``T = max(epochs - w, 1)``, every step of epoch ``e`` trains at
    ``lr * warm(e) * main(e)``:

    - warmup: ``warm(e) = (e + 1) / (w + 1)`` for ``e < w`` (a linear ramp lr/(w+1), 2·lr/(w+1), …,
      w·lr/(w+1); epoch ``w`` is the first at the full schedule), else 1. With
      ``warmup_epochs >= epochs`` the whole run is warmup (smoke runs).
    - ``none``: ``main = 1`` (constant LR).
    - ``multistep``: ``main = gamma ** #{m in milestones : m <= e}`` — milestones are absolute
      0-based epochs (as in `MultiStepLR`): [80, 120, 160] decays from epoch 80 on.
    - ``cosine``: ``main = (1 + cos(pi·t/T))/2`` — `CosineAnnealingLR` (to 0) with ``T_max = T``
      after the warmup, one value per epoch: the first epoch after warmup trains at ``lr``.
    - ``exponential``: ``main = gamma ** t`` — gamma is the factor per epoch.
    - ``onecycle`` (a warm-up + cosine, not torch's `OneCycleLR`): ``cosine`` with its warm-up,
      counted in steps instead of epochs (a linear ramp over ``w·steps_per_epoch`` steps, then a
      cosine to 0 at the last step), which suits short runs (the LR reaches 0 within the run).

    Implemented as one `LambdaLR` of that closed form, so its `state_dict` (built-in types only)
    resumes exactly.
    """
    key = str(name).lower()
    if key not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}. Choices: {', '.join(SCHEDULES)}")
    epochs, warmup_epochs, steps = int(epochs), int(warmup_epochs), int(steps_per_epoch)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if steps < 1:
        raise ValueError(f"steps_per_epoch must be >= 1 (optimizer steps an epoch), got {steps}")
    milestones = tuple(milestones or ())
    if key == "multistep":
        if not milestones:
            raise ValueError("schedule='multistep' needs milestones (0-based epochs at which the "
                             "LR is multiplied by gamma), e.g. milestones=(80, 120, 160)")
        if any(int(m) < 0 for m in milestones):
            raise ValueError(f"milestones must be non-negative epochs, got {list(milestones)}")
    if key in ("multistep", "exponential") and not gamma > 0:
        raise ValueError(f"gamma must be positive for schedule={key!r}, got {gamma!r}")
    factors = [
        _step_factor(key, steps_per_epoch=steps, base_lr=g.get("initial_lr", g["lr"]),
                     epochs=epochs, milestones=milestones, gamma=float(gamma),
                     warmup_epochs=warmup_epochs)
        for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def lr_table(name: str, *, lr: float, epochs: int, steps_per_epoch: int = 1, **kw) -> list[float]:
    """The LR of every optimizer step (``epochs * steps_per_epoch`` of them), read off the
    scheduler `fit` builds, stepped on a dummy optimizer; with ``steps_per_epoch=1`` one value an
    epoch. Keywords: those of `build_scheduler` (milestones, gamma, warmup_epochs)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(name, opt, epochs=epochs, steps_per_epoch=steps_per_epoch, **kw)
    out = []
    for _ in range(int(epochs) * int(steps_per_epoch)):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    return out


def schedule_kwargs(recipe) -> dict:
    """The keywords of `build_scheduler` / `lr_table` a `recipes.Recipe` gives."""
    return {"name": recipe["schedule"], "epochs": int(recipe["epochs"]),
            "milestones": recipe["milestones"] or (), "gamma": recipe["gamma"],
            "warmup_epochs": recipe["warmup_epochs"]}


def optimizer_kwargs(recipe) -> dict:
    """The keywords of `build_optimizer` a `recipes.Recipe` gives."""
    return {"name": recipe["optimizer"], "lr": recipe["lr"], "momentum": recipe["momentum"],
            "nesterov": recipe["nesterov"], "weight_decay": recipe["weight_decay"]}


def recipe_lr_table(recipe, steps_per_epoch: int = 1) -> list[float]:
    """The LR of every optimizer step of `recipe` with `steps_per_epoch` steps an epoch: the
    table `fit` trains it with."""
    return lr_table(lr=recipe["lr"], steps_per_epoch=steps_per_epoch, **schedule_kwargs(recipe))
