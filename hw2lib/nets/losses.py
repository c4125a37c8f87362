"""Classification losses for balanced and long-tailed training, built by name.

    criterion = build_loss("balanced_softmax", class_counts=ds.class_counts("train"))
    loss = criterion(logits, targets)            # logits B×C, targets B (int64) -> scalar

Names (`available_losses()`), with their keyword options:

* ``ce`` — cross-entropy; ``label_smoothing`` (default 0.0).
* ``balanced_softmax`` — Ren et al., NeurIPS 2020: cross-entropy on ``logits + log n_j`` (computed
  with ``log π_j``, which differs by a constant that cancels in the softmax).
* ``logit_adjusted`` — Menon et al., ICLR 2021: cross-entropy on ``logits + tau·log π_j`` with the
  training prior ``π_j = n_j / Σn``; ``tau`` (default 1.0). With ``tau=1`` it equals Balanced
  Softmax (the constant ``log Σn`` cancels in the softmax).
* ``class_balanced`` — Cui et al., CVPR 2019: cross-entropy weighted per sample by
  ``w_y ∝ (1-β)/(1-β^n_y)`` (inverse effective number), normalized so that ``Σ_j w_j = C``;
  ``beta`` (default 0.9999). The batch loss is the plain mean of ``w_y·CE`` over samples (as in the
  paper's code), not PyTorch's ``weight=`` mean, which divides by the batch's summed weights.
* ``focal`` — Lin et al., ICCV 2017: ``-(1-p_y)^γ log p_y``; ``gamma`` (default 2.0), ``alpha``
  (None, or one weight per class multiplying each sample's term). ``gamma=0`` is cross-entropy.

Every loss also takes ``reduction`` ("mean" default, "sum", "none"). Losses that need class
counts (balanced_softmax, logit_adjusted, class_balanced) raise without them; the others accept
and keep them. Counts live in the buffer ``class_counts`` (float), so ``.to(device)`` /
``.to(torch.float64)`` move them with the module. A zero, negative or non-finite count is a
``ValueError`` naming the class; logits whose class dimension differs from the counts are a
``ValueError`` too.

`posthoc_logit_adjust` is the evaluation-time variant (Menon et al. §4): ``logits - tau·log π``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LogitAdjustedLoss",
    "available_losses",
    "build_loss",
    "posthoc_logit_adjust",
]

_REDUCTIONS = ("mean", "sum", "none")


def _positive_per_class(values, what: str = "class_counts") -> torch.Tensor:
    """`values` (one positive finite number per class, ordered by class index: class counts or
    focal's alpha) as a 1-D float64 CPU tensor, or a ValueError naming `what` and the class."""
    if isinstance(values, Mapping):
        example = " (e.g. ds.class_counts('train'))" if what == "class_counts" else ""
        raise ValueError(f"{what} must be a sequence ordered by class index{example}, not a "
                         f"mapping")
    if isinstance(values, torch.Tensor):
        out = values.detach().to("cpu", torch.float64)
    else:
        try:
            out = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{what} must be a sequence of numbers, one per class: {err}") from err
    if out.ndim != 1 or out.numel() == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence (one value per class), got "
                         f"shape {tuple(out.shape)}")
    for j, v in enumerate(out.tolist()):
        if not math.isfinite(v) or v <= 0:
            hint = (f" (class {j} has no training samples? drop it or fix the counts)"
                    if what == "class_counts" else "")
            raise ValueError(f"{what}[{j}] = {v}: every class needs a positive, finite "
                             f"value{hint}")
    return out


def _log_prior(class_counts: torch.Tensor) -> torch.Tensor:
    """log π_j = log(n_j / Σn), the log of the training prior, in the dtype and device of
    `class_counts` (1-D, positive). Every loss and adjustment here that needs it uses it."""
    return torch.log(class_counts) - torch.log(class_counts.sum())


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {list(_REDUCTIONS)}")
    return reduction


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _CountsLoss(nn.Module):
    """Base: optional class counts in the float buffer `class_counts`."""

    needs_counts = False
    class_counts: torch.Tensor | None

    def __init__(self, class_counts=None, *, reduction: str = "mean"):
        super().__init__()
        name = type(self).__name__
        if class_counts is None and self.needs_counts:
            raise ValueError(f"{name} needs class_counts (training images per class, ordered by "
                             f"class index), e.g. build_loss(..., class_counts=ds.class_counts("
                             f"'train'))")
        counts = None if class_counts is None else _positive_per_class(class_counts)
        self.register_buffer("class_counts", None if counts is None
                             else counts.to(torch.get_default_dtype()))
        self.reduction = _check_reduction(reduction)

    @property
    def num_classes(self) -> int | None:
        return None if self.class_counts is None else self.class_counts.numel()

    def _check_logits(self, logits: torch.Tensor) -> None:
        if logits.ndim != 2:
            raise ValueError(f"{type(self).__name__}: logits must be B×C, got shape "
                             f"{tuple(logits.shape)}")
        if self.class_counts is not None and logits.shape[1] != self.class_counts.numel():
            raise ValueError(f"{type(self).__name__}: logits have {logits.shape[1]} classes but "
                             f"class_counts has {self.class_counts.numel()} entries")

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, reduction={self.reduction!r}"


class CrossEntropyLoss(_CountsLoss):
    """Plain cross-entropy (counts accepted but unused), optional label smoothing."""

    def __init__(self, class_counts=None, *, label_smoothing: float = 0.0,
                 reduction: str = "mean"):
        super().__init__(class_counts, reduction=reduction)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits, targets):
        self._check_logits(logits)
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing,
                               reduction=self.reduction)


class BalancedSoftmaxLoss(_CountsLoss):
    """Balanced Softmax (Ren et al. 2020): CE(logits + log n_j, y), computed as CE(logits +
    log π_j, y) (the constant log Σn cancels in the softmax). Predict with plain logits."""

    needs_counts = True

    def forward(self, logits, targets):
        self._check_logits(logits)
        return F.cross_entropy(logits + _log_prior(self.class_counts), targets,
                               reduction=self.reduction)


class LogitAdjustedLoss(_CountsLoss):
    """Logit-adjusted loss (Menon et al. 2021): CE(logits + tau·log π_j, y)."""

    needs_counts = True

    def __init__(self, class_counts=None, *, tau: float = 1.0, reduction: str = "mean"):
        super().__init__(class_counts, reduction=reduction)
        if not math.isfinite(float(tau)):
            raise ValueError(f"tau must be a finite number, got {tau}")
        self.tau = float(tau)

    def forward(self, logits, targets):
        self._check_logits(logits)
        return F.cross_entropy(logits + self.tau * _log_prior(self.class_counts), targets,
                               reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


class ClassBalancedLoss(_CountsLoss):
    """Class-balanced CE (Cui et al. 2019): per-sample weight w_y = (1-β)/(1-β^n_y), scaled so
    that Σ_j w_j = C (buffer `class_weights`); loss = mean over samples of w_y·CE."""

    needs_counts = True

    def __init__(self, class_counts=None, *, beta: float = 0.9999, reduction: str = "mean"):
        super().__init__(class_counts, reduction=reduction)
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = float(beta)
        n = _positive_per_class(class_counts)  # float64: the weights are computed in double
        # 1 - β^n computed as -expm1(n·log β) keeps precision for β close to 1 (float64)
        eff = -torch.expm1(n * math.log(self.beta)) if self.beta > 0 else torch.ones_like(n)
        w = (1.0 - self.beta) / eff
        w = w * (n.numel() / w.sum())
        self.register_buffer("class_weights", w.to(torch.get_default_dtype()))

    def forward(self, logits, targets):
        self._check_logits(logits)
        ce = F.cross_entropy(logits, targets, reduction="none")
        return _reduce(self.class_weights[targets] * ce, self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


class FocalLoss(_CountsLoss):
    """Focal loss (Lin et al. 2017), softmax form: -α_y (1-p_y)^γ log p_y (α_y = 1 without alpha).
    γ=0 and no alpha is cross-entropy."""

    def __init__(self, class_counts=None, *, gamma: float = 2.0, alpha=None,
                 reduction: str = "mean"):
        super().__init__(class_counts, reduction=reduction)
        if not (math.isfinite(float(gamma)) and float(gamma) >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
        self.gamma = float(gamma)
        if alpha is not None:
            if isinstance(alpha, (int, float)):
                raise ValueError("alpha must be None or one weight per class (a sequence); a "
                                 "single number only rescales the softmax focal loss")
            alpha = _positive_per_class(alpha, "alpha").to(torch.get_default_dtype())
            if self.class_counts is not None and alpha.numel() != self.class_counts.numel():
                raise ValueError(f"alpha has {alpha.numel()} entries but class_counts has "
                                 f"{self.class_counts.numel()}")
        self.register_buffer("alpha", alpha)

    def forward(self, logits, targets):
        self._check_logits(logits)
        if self.alpha is not None and logits.shape[1] != self.alpha.numel():
            raise ValueError(f"FocalLoss: logits have {logits.shape[1]} classes but alpha has "
                             f"{self.alpha.numel()} entries")
        # at least float32 whatever autocast made the logits (CPU autocast keeps log_softmax in
        # bf16); float64 stays float64
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        logp = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        if self.gamma == 0:
            loss = -logp
        else:
            # 1 - p computed as -expm1(log p) (accurate near p = 1); the floor keeps the gradient
            # of x^γ finite at x = 0 for γ < 1
            one_minus_p = (-torch.expm1(logp)).clamp_min(torch.finfo(logp.dtype).tiny)
            loss = -(one_minus_p**self.gamma) * logp
        if self.alpha is not None:
            loss = self.alpha[targets] * loss
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()


_LOSSES: dict[str, type[_CountsLoss]] = {
    "ce": CrossEntropyLoss,
    "balanced_softmax": BalancedSoftmaxLoss,
    "logit_adjusted": LogitAdjustedLoss,
    "class_balanced": ClassBalancedLoss,
    "focal": FocalLoss,
}


def available_losses() -> list[str]:
    """Registered loss names."""
    return list(_LOSSES)


def _options(cls) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_loss(name: str, class_counts=None, **kw) -> nn.Module:
    """A loss module ``(logits B×C, targets B) -> scalar`` (B values with ``reduction="none"``)
    by name (see the module docstring).

    class_counts: training images per class, ordered by class index (list, array or tensor).
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {available_losses()}")
    cls = _LOSSES[name]
    allowed = _options(cls)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for loss {name!r}; its options are "
                         f"{allowed}")
    return cls(class_counts, **kw)


def posthoc_logit_adjust(logits: torch.Tensor, class_counts, tau: float = 1.0) -> torch.Tensor:
    """Evaluation-time logit adjustment (Menon et al. 2021): ``logits - tau·log π`` with the
    training prior ``π_j = n_j / Σn``; same dtype and device as `logits` (class dim last)."""
    counts = _positive_per_class(class_counts)
    if logits.shape[-1] != counts.numel():
        raise ValueError(f"logits have {logits.shape[-1]} classes (last dim) but class_counts has "
                         f"{counts.numel()} entries")
    shift = float(tau) * _log_prior(counts)  # float64, then cast once
    return logits - shift.to(device=logits.device, dtype=logits.dtype)
