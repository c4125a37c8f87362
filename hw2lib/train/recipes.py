"""One recipe, written once: every setting of a training, its default and its unit, in one
typed record (`Recipe`), and the study's catalogues of recipes (Task B's two tracks, Task C's
backbones). `engine.fit`, `experiment.run_experiment` (and so the run's identity), `hw2 plan` and
the benchmarks all take a recipe whole: adding a setting is a field here and the code that uses
it, nothing else.

A `Recipe` is a frozen dataclass that also reads as a mapping (`r["lr"]`, `dict(r)`, `{**r}`), so
tables and JSON take it as they take a dict. `resolve(spec, **common)` builds one from a
catalogue entry (unknown keys are an error naming the known ones); `__post_init__` resolves what
follows from the epochs (MultiStep milestones, the decay factor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from hw2lib.core import io
from hw2lib.core.constants import AUGMENT_PRESETS, OPTIMIZERS, SCHEDULES

LABELS = ("group", "label", "track")  # presentation only: not part of a run's identity
SELECT = ("acc", "bal_acc")  # validation accuracy or balanced accuracy picks a run's best.pt
# Settings added after runs existed: in a run's identity only where they differ from their
# default, so that every run made before them keeps its identity (and is reused).
LATER = ("ema_raw", "select")


@dataclass(frozen=True, eq=False)
class Recipe(Mapping):
    """Everything that decides how a model is trained (not the data it sees: see
    `experiment.run_identity`)."""

    name: str = "run"
    seed: int = 0  # seeds model init, batch order, augmentation and mixing draws
    epochs: int = 1
    # the network
    model: str = "resnet18"  # a hw2lib.nets.models name
    stem: str = "imagenet"  # imagenet: torchvision's 7×7/2 + max-pool; small: 3×3/1, no max-pool
    pretrained: bool = False  # start from ImageNet weights (or a local file: run_experiment)
    resize: int | None = None  # upsample tiles on the device to this side (None: as cached)
    # the optimizer
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05  # per batch of `batch_size`
    momentum: float = 0.9  # sgd only
    nesterov: bool = False
    weight_decay: float = 5e-4  # L2 (decoupled for adamw)
    # the LR table (hw2lib.train.schedules): one value per optimizer step
    schedule: str = "none"  # none | multistep | cosine | exponential | onecycle
    milestones: list | None = None  # multistep: epochs (None: 40/60/80 % of `epochs`)
    gamma: float | None = None  # multistep: ×0.2 per milestone; exponential: ÷100 over the run
    warmup_epochs: int = 0  # linear warm-up epochs before the schedule
    # the batches
    batch_size: int = 128
    augment: str = "basic"  # none | basic (crop + flip) | color (+ jitter) | d4 (8 symmetries)
    mix: str = "none"  # none | mixup | cutmix | both (hw2lib.train.mixing)
    mix_alpha: float = 1.0  # Beta(α, α) of the mixing factor
    # the objective and the weights evaluated
    loss: str = "ce"  # a hw2lib.nets.losses name
    loss_kw: dict = field(default_factory=dict)  # e.g. {"label_smoothing": 0.1}
    ema: float = 0.0  # decay of an EMA of the weights (0: none); the EMA is what is evaluated
    ema_raw: bool = False  # with an EMA, also evaluate the raw weights each epoch (the EMA lever)
    tta: bool = False  # score with the 8-view test-time average (D4)
    select: str = "acc"  # the validation metric that picks best.pt: acc | bal_acc
    # presentation only: not part of the identity (absent from the mapping when None)
    group: str | None = None
    label: str | None = None
    track: str | None = None  # hw2 (the report's protocol) | best (the best recipe)

    def __post_init__(self):
        for what, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES),
                                     ("augmentation", self.augment, AUGMENT_PRESETS),
                                     ("selection metric", self.select, SELECT)):
            if value not in choices:
                raise ValueError(f"recipe {self.name!r}: unknown {what} {value!r}; choose one "
                                 f"of {', '.join(choices)}")
        if int(self.epochs) < 1:
            raise ValueError(f"recipe {self.name!r}: epochs must be >= 1, got {self.epochs!r}")
        if self.milestones is None and self.schedule == "multistep":
            # the study's [80, 120, 160] of 200 epochs, scaled to the epoch budget; on a short
            # budget two milestones may round to one epoch: kept once (a double one divides by 25)
            object.__setattr__(self, "milestones", sorted(
                {max(1, round(self.epochs * f)) for f in (0.4, 0.6, 0.8)}))
        if self.gamma is None:
            object.__setattr__(self, "gamma", 0.2 if self.schedule != "exponential"
                               else 0.01 ** (1 / self.epochs))

    # ------------------------------------------------------------------ a read-only mapping
    def _keys(self) -> list[str]:
        return [k for k in DEFAULTS if not (k in LABELS and getattr(self, k) is None)]

    def __getitem__(self, key: str):
        if key not in DEFAULTS or (key in LABELS and getattr(self, key) is None):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.items() if k not in DEFAULTS or DEFAULTS[k] != v}
        return f"Recipe({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # ------------------------------------------------------------------ derived records
    def as_dict(self) -> dict:
        """The recipe as built-in types: what checkpoints, run.json and result.json keep."""
        return io.to_builtin(dict(self))

    def identity(self) -> dict:
        """The part of a run's identity the recipe gives: every setting but its name and labels
        (and the `LATER` settings at their defaults)."""
        return comparable(self.as_dict())

    def replace(self, **changes) -> Recipe:
        """A copy with `changes` (milestones and gamma are kept as resolved unless given)."""
        return resolve({**self.as_dict(), **changes})


DEFAULTS = {f.name: (f.default_factory() if callable(f.default_factory) else f.default)
            for f in fields(Recipe)}
SETTINGS = tuple(k for k in DEFAULTS if k not in LABELS and k not in ("name", "seed"))
REQUIRED = ("name", "epochs", "seed")  # what a catalogue entry (or its caller) must give


def comparable(config: Mapping) -> dict:
    """A stored recipe (`Recipe.as_dict`, old or new) as what identifies its training: without
    name and labels, the `LATER` settings only where they differ from their defaults."""
    return {k: v for k, v in config.items() if k not in LABELS and k != "name"
            and not (k in LATER and v == DEFAULTS[k])}


def resolve(spec: Mapping, **common) -> Recipe:
    """`spec` ∪ `common` ∪ the defaults as a `Recipe`. `spec` wins over `common`; unknown keys
    and a missing name, epochs or seed are errors."""
    cfg = {**common, **spec}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"experiment {spec.get('name')!r}: unknown keys {sorted(unknown)}; "
                         f"known: {sorted(k for k in DEFAULTS if k not in LABELS)} + "
                         f"{', '.join(LABELS)}")
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"experiment {spec.get('name')!r}: missing {missing}")
    return Recipe(**io.to_builtin(cfg))


def from_stored(config: Mapping) -> Recipe:
    """The recipe a checkpoint or result.json stored (`Recipe.as_dict`)."""
    return resolve({k: v for k, v in config.items() if k != "model_kw"})  # model_kw: retired, {}


def with_epochs(spec: dict, epochs: int | None) -> dict:
    """`spec` trained for `epochs` instead of its protocol's (None: the protocol's). Warm-up
    scales with it (at least one epoch where the protocol has one); MultiStep milestones follow
    from the epochs when the recipe is resolved (40/60/80 %)."""
    if epochs is None or int(epochs) == spec["epochs"]:
        return spec
    out = {**spec, "epochs": int(epochs)}
    if spec.get("warmup_epochs"):
        out["warmup_epochs"] = max(1, round(spec["warmup_epochs"] * int(epochs) / spec["epochs"]))
    return out


# =========================================================================== the catalogues

_ADAM = dict(optimizer="adam", lr=1e-3, weight_decay=0.0)
# Track "hw2" — the HW2 report's protocol. Where the report states a setting it is used; where it
# is silent the choice is named here (and in B-ablation):
# - baselines: SGD (lr `lr_sgd`: the report gives none), no LR schedule, crop + flip (the
#   "original code's" augmentation), 100 epochs (the report's ResNeXt-50 number is "after 100
#   epochs", before its LR tuning);
# - its scheduled recipe (ResNeXt-18, val 0.8906): Adam from 1e-3, MultiStepLR at [80, 120, 160]
#   ×0.2, 200 epochs, with crop + flip + ColorJitter (the ablation's "both": the report's final
#   model is its best ablation cell);
# - Figure 9 (ResNeXt-50 vs "my DLResNet", both scheduled, 200 epochs): the dilated DLResNet-18
#   (the report found the two variants "basically the same"; the dilated one has half the weights);
# - the schedule comparison and the 2×2 ablation run on ResNeXt-18, the model the report tuned its
#   schedule on (its "0.88–0.89" for cosine/exponential matches ResNeXt-18's 0.8906, not the
#   ≈0.80 of its ResNet-18).
_HW2_BASELINE = dict(track="hw2", epochs=100)
_HW2_SCHEDULED = dict(track="hw2", epochs=200, schedule="multistep", gamma=0.2, augment="color",
                      **_ADAM)
# Track "best" — a recipe for 64-px aerial tiles, from scratch: ResNet-18 with a 3×3 stride-1 stem
# (no max-pool), SGD + Nesterov with a warm-up + cosine LR (schedule "onecycle": 5 warm-up epochs,
# then a cosine to 0, both per step; not torch's OneCycleLR), the 8 symmetries of the square as
# augmentation and as 8-view test-time averaging,
# label smoothing 0.1, mixup or CutMix on every batch, an EMA of the weights; 100 epochs. Each
# lever is measured by leaving it out; two need no training of their own: the 8-view TTA (the same
# runs scored without it) and the EMA (it never feeds back into training, so "without EMA" is the
# same runs' raw weights, evaluated each epoch beside the EMA's: `val_acc_raw`, `best_raw.pt`).
BEST = dict(track="best", group="best", epochs=100, model="resnet18", stem="small",
            optimizer="sgd", lr=0.1, nesterov=True, weight_decay=5e-4, schedule="onecycle",
            warmup_epochs=5, augment="d4", loss_kw={"label_smoothing": 0.1}, mix="both",
            mix_alpha=1.0, ema=0.999, tta=True)
# Leave-one-out variants of BEST: name → (the lever left out, what replaces it).
LEVERS = {
    "best_no_d4": ("8 symmetries (crop + horizontal flip instead)", dict(augment="basic")),
    "best_no_mix": ("mixup / CutMix", dict(mix="none")),
    "best_no_label_smoothing": ("label smoothing", dict(loss_kw={})),
    "best_multistep": ("the warm-up + cosine LR, per step (MultiStep ×0.2 at 40/60/80 %, no "
                       "warm-up, instead)",
                       dict(schedule="multistep", gamma=0.2, warmup_epochs=0)),
    "best_torchvision_stem": ("the 64-px stem (torchvision's 7×7/2 + max-pool instead)",
                              dict(stem="imagenet")),
}
# Every from-scratch experiment of Task B by name; B-ablation's `experiments` parameter picks from
# these. `epochs` is the protocol's: a profile's `epochs` (track hw2) / `best_epochs` (track best)
# replaces it, scaling milestones and warm-up with it.
B_EXPERIMENTS: dict[str, dict] = {
    "resnet18": dict(model="resnet18", group="baseline", **_HW2_BASELINE),
    "resnet34": dict(model="resnet34", group="baseline", **_HW2_BASELINE),
    "resnet50": dict(model="resnet50", group="baseline", **_HW2_BASELINE),
    "dlresnet18_5x5_sgd": dict(model="dlresnet18_5x5", group="dlresnet", **_HW2_BASELINE),
    "dlresnet18_dilated_sgd": dict(model="dlresnet18_dilated", group="dlresnet", **_HW2_BASELINE),
    "resnet18_adam": dict(model="resnet18", group="dlresnet", **_HW2_BASELINE, **_ADAM),
    "dlresnet18_5x5_adam": dict(model="dlresnet18_5x5", group="dlresnet", **_HW2_BASELINE,
                                **_ADAM),
    "dlresnet18_dilated_adam": dict(model="dlresnet18_dilated", group="dlresnet",
                                    **_HW2_BASELINE, **_ADAM),
    "resnext50_32x4d": dict(model="resnext50_32x4d", group="resnext", **_HW2_BASELINE),
    "resnext50_sched": dict(model="resnext50_32x4d", group="resnext", **_HW2_SCHEDULED),
    "dlresnet18_sched": dict(model="dlresnet18_dilated", group="resnext", **_HW2_SCHEDULED),
    # the report's final model: also the schedule comparison's MultiStep and the ablation's "both"
    "resnext18": dict(model="resnext18", group="schedule", **_HW2_SCHEDULED),
    "resnext18_cosine": dict(model="resnext18", group="schedule",
                             **{**_HW2_SCHEDULED, "schedule": "cosine"}),
    "resnext18_exponential": dict(model="resnext18", group="schedule",
                                  **{**_HW2_SCHEDULED, "schedule": "exponential"}),
    "resnext18_aug_only": dict(model="resnext18", group="ablation",
                               **{**_HW2_SCHEDULED, "schedule": "none"}),
    "resnext18_lr_only": dict(model="resnext18", group="ablation",
                              **{**_HW2_SCHEDULED, "augment": "none"}),
    "resnext18_none": dict(model="resnext18", group="ablation",
                           **{**_HW2_SCHEDULED, "schedule": "none", "augment": "none"}),
    # the whole recipe also scores its raw weights each epoch: the EMA lever's row (its variants
    # and Task C's best do not: nothing reads theirs)
    "best": dict(BEST, ema_raw=True),
    **{name: {**BEST, **change} for name, (_, change) in LEVERS.items()},
}


def c_backbones(*, lr_pretrained: float, pretrained_resize=None) -> dict:
    """Task C's backbones and their recipes (with the protocol's epochs and track):
    - resnext18: the HW2 protocol's from-scratch model, trained as in Task B (Adam 1e-3,
      MultiStep [80, 120, 160] ×0.2, 200 epochs, crop + flip + colour);
    - resnet18_pretrained: the report's ImageNet ResNet-18, fine-tuned 100 epochs ("only 100
      epochs on resnet18"; optimizer and schedule are not stated: SGD + cosine chosen here);
    - best: Task B's best recipe (track 2), without its label smoothing so that every loss of the
      comparison is the loss as named; best_no_mix: the same without mixup/CutMix (for short
      runs: the `quick` profile)."""
    best = {k: v for k, v in BEST.items() if k not in ("loss_kw", "group")}
    return {
        "resnext18": {k: v for k, v in B_EXPERIMENTS["resnext18"].items() if k != "group"},
        "resnet18_pretrained": dict(track="hw2", epochs=100, model="resnet18", pretrained=True,
                                    resize=pretrained_resize, optimizer="sgd", lr=lr_pretrained,
                                    weight_decay=1e-4, schedule="cosine", augment="basic"),
        "best": best,
        "best_no_mix": {**best, "mix": "none"},
    }
