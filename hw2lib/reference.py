"""The HW2 report's own numbers (validation accuracy), shown only beside the run made with the
same protocol. A value is a number, or a (low, high) range where the report gives one."""

REFERENCE = {
    "A/resnet50_pretrained": 0.9630,
    "B/resnet18": 0.80, "B/resnet34": 0.80,
    "B/dlresnet18_sgd": (0.81, 0.82), "B/dlresnet18_adam": 0.825,
    "B/resnext50_32x4d": 0.86, "B/resnext18": 0.8906,
    "B/resnext18_other_schedules": (0.88, 0.89),
    "C/resnext18_ce": 0.8006, "C/resnext18_balanced_softmax": 0.8796,
    "C/resnet18_pretrained_ce": 0.8959, "C/resnet18_pretrained_balanced_softmax": 0.9404,
}


def reference_value(key: str | None, *, text: bool = False):
    """The report's number for `key` (a range's midpoint), or its text ("0.81–0.82") with
    `text`; None (or "—") when the report has none."""
    v = REFERENCE.get(key) if key else None
    if v is None:
        return "—" if text else None
    if isinstance(v, tuple):
        return f"{v[0]:.2f}–{v[1]:.2f}" if text else sum(v) / 2
    return f"{v:.4f}" if text else v
