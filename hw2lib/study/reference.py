"""The HW2 report's own numbers (validation accuracy on its own split — not this study's: its
validation set has 5,472 images with per-class shares 0.19–0.235, this study's is a stratified
5,400), shown only beside the run made with the same protocol ("comparable" means the same
protocol, not the same data).

A value is stated as the report states it: a number ("0.8906"), an approximate one ("about 0.80"
→ `Approx(0.80)`, printed "≈ 0.80"), or a (low, high) range ("0.81 ~ 0.82" → "0.81–0.82"). A range
stays a range: it has no single number."""

from __future__ import annotations

from typing import NamedTuple

REF_LABEL = "HW2 report (its split)"


class Approx(NamedTuple):
    """A number the report gives as "about x"."""
    value: float


REFERENCE: dict[str, float | Approx | tuple[float, float]] = {
    "A/resnet50_pretrained": 0.9630,
    "B/resnet18": Approx(0.80), "B/resnet34": Approx(0.80),  # "both about 0.80"
    "B/dlresnet18_sgd": (0.81, 0.82),
    # "one more point" with Adam on the SGD runs' 0.81–0.82: a range derived from the report
    "B/dlresnet18_adam": (0.82, 0.83),
    "B/resnext50_32x4d": Approx(0.86), "B/resnext18": 0.8906,
    "B/resnext18_other_schedules": (0.88, 0.89),
    "C/resnext18_ce": 0.8006, "C/resnext18_balanced_softmax": 0.8796,
    "C/resnet18_pretrained_ce": 0.8959, "C/resnet18_pretrained_balanced_softmax": 0.9404,
}


def reference_text(v) -> str:
    """"0.8906", "≈ 0.80" or "0.81–0.82"."""
    if isinstance(v, Approx):
        return f"≈ {v.value:.2f}"
    if isinstance(v, tuple):
        return f"{v[0]:.2f}–{v[1]:.2f}"
    return f"{v:.4f}"


def reference_value(key: str | None, *, text: bool = False):
    """The report's number for `key` — a float only where the report gives one number (exact or
    "about"); None for a range, which has no single number — or, with `text`, as the report
    states it ("0.8906", "≈ 0.80", "0.81–0.82"); None (or "—") when the report has none."""
    v = REFERENCE.get(key) if key else None
    if v is None:
        return "—" if text else None
    if text:
        return reference_text(v)
    if isinstance(v, Approx):
        return v.value
    return None if isinstance(v, tuple) else float(v)
