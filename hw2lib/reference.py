"""The HW2 report's own numbers (validation accuracy), shown only beside the run made with the
same protocol."""

REFERENCE = {
    "A/resnet50_pretrained": 0.9630,
    "B/resnet18": 0.80, "B/resnet34": 0.80,
    "B/dlresnet18_sgd": 0.815, "B/dlresnet18_adam": 0.825,
    "B/resnext50_32x4d": 0.86, "B/resnext18": 0.8906,
    "C/resnext18_ce": 0.8006, "C/resnext18_balanced_softmax": 0.8796,
    "C/resnet18_pretrained_ce": 0.8959, "C/resnet18_pretrained_balanced_softmax": 0.9404,
}
