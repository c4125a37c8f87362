"""Numbers more than one module needs, in one place."""

# Per-channel mean/std of pixels in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what torchvision's ImageNet weights expect
IMAGENET_STD = (0.229, 0.224, 0.225)
EUROSAT_MEAN = (0.3444, 0.3803, 0.4078)  # all 27,000 EuroSAT RGB images
EUROSAT_STD = (0.2027, 0.1369, 0.1156)

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # the stratified split's shares (load_dataset's default)
NOTEBOOKS = ("A-train", "A-vis", "B-ablation", "C-longtail")  # the study's notebooks, in run order

# Names the training recipe chooses from (checked by the parameter check before anything runs).
OPTIMIZERS = ("sgd", "adam", "adamw")
# every schedule is a per-step LR table (hw2lib.train.schedules); "onecycle" is a warm-up + cosine
# counted in steps (not torch's OneCycleLR): the value keeps its name, runs keep their identity
SCHEDULES = ("none", "multistep", "cosine", "exponential", "onecycle")
SCHEDULE_LABELS = {"none": "constant", "multistep": "MultiStep", "cosine": "cosine",
                   "exponential": "exponential", "onecycle": "warm-up + cosine, per step"}
AUGMENT_PRESETS = ("none", "basic", "color", "d4")
MIXES = ("none", "mixup", "cutmix", "both")  # batch mixing (mixup / CutMix / either at random)
# Loss names (hw2lib.nets.losses registers them), here so that the parameter check names the choices
# without importing torch.
LOSSES = ("ce", "balanced_softmax", "logit_adjusted", "class_balanced", "focal")
