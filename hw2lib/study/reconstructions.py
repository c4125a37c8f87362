"""Reconstructions: every place the HW2 report is silent (or states a setting only in words) and
what this study chose there — one table, rendered as a block in each notebook and in the README.

    from hw2lib.study import reconstructions
    reconstructions.block("B-ablation")   # IPython Markdown: the rows that concern B
    reconstructions.markdown()            # the whole table (the README's)
"""

from __future__ import annotations

# (what, what the report says, what this study does, the notebooks it concerns)
ROWS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("train / val / test split",
     "its own split, not described; its validation set has 5,472 images (per-class shares "
     "0.19–0.235)",
     "a seeded stratified 60/20/20 split (`split_seed` 0; 5,400 val, 5,400 test images): the "
     "report's numbers are on its split, so \"comparable\" means the same protocol, not the same "
     "data", ("A-train", "B-ablation", "C-longtail")),
    ("normalization", "not stated",
     "EuroSAT's per-channel mean/std for from-scratch networks, ImageNet's for pretrained ones",
     ("A-train", "B-ablation", "C-longtail")),
    ("batch size", "not stated", "128 (every training)", ("A-train", "B-ablation", "C-longtail")),
    ("crop padding", "\"RandomCrop\" of the original code, padding not stated",
     "random 64-px crop of the tile zero-padded by 4 px, + horizontal flip",
     ("A-train", "B-ablation", "C-longtail")),
    ("colour-jitter strength", "\"ColorJitter\" added, strength not stated",
     "brightness, contrast and saturation factors each uniform in [0.6, 1.4], no hue",
     ("B-ablation", "C-longtail")),
    ("Task A's fine-tuning recipe",
     "an ImageNet ResNet-50 fine-tuned to val 0.9630; optimizer, epochs, input size not stated",
     "SGD lr 0.02 (momentum 0.9, weight decay 1e-4), cosine over 15 epochs, crop + flip, the "
     "64-px tiles upsampled to 224 px on the device; the 0.9630 is shown only beside such a run "
     "(pretrained, not random init, 15 epochs, whole train split)", ("A-train", "A-vis")),
    ("A-vis tiles", "`Pasture_1.jpg` and `Industrial_1.jpg`",
     "those files, by name, from whichever split holds them (`tile_files`); on other data the "
     "first file of each chosen class, and the page says so", ("A-vis",)),
    ("A-vis optimization settings",
     "layer4's last 1×1 conv, \"maximize the mean\" of the layer; steps, octaves, jitter not "
     "stated",
     "`layer4.2.conv3`, one channel's mean (the tile's most excited channel); DeepDream over "
     "octaves with jitter and normalized steps; activation maximization in a decorrelated "
     "Fourier parameterization (the profile's steps)", ("A-vis",)),
    ("optimizer of the scheduled runs",
     "\"initial learning rate 0.001\" with MultiStepLR [80, 120, 160] ×0.2; Adam named for "
     "DLResNet (\"SGD → Adam: one more point\")",
     "Adam from 1e-3 (no weight decay) for every scheduled run: ResNeXt-18 / -50, the scheduled "
     "DLResNet-18, the schedule comparison and the ablation", ("B-ablation", "C-longtail")),
    ("baselines' optimizer and epochs",
     "SGD without LR tuning; ResNeXt-50's 0.86 \"after 100 epochs\"",
     "SGD lr 0.05 (momentum 0.9, weight decay 5e-4), constant, 100 epochs for every baseline",
     ("B-ablation",)),
    ("DLResNet's second path and its merge",
     "a second path with a different kernel in each BasicBlock (Figure 8, an image); two variants "
     "\"basically the same\"",
     "beside the 3×3 path, a 5×5 path (`dlresnet18_5x5`) or a 3×3 path with dilation 2 "
     "(`dlresnet18_dilated`), conv-BN-ReLU-conv-BN, summed with the main path before the residual "
     "addition (no 1×1 merge); Figure 9 uses the dilated one", ("B-ablation",)),
    ("ResNeXt-18's grouping", "\"group conv added\" to ResNet-18; cardinality and width not stated",
     "ResNet-18's BasicBlocks (2, 2, 2, 2) with the first 3×3 conv grouped — cardinality 32, "
     "width 4 per group (twice ResNet-18's width) — and the second dense (it merges the groups)",
     ("B-ablation", "C-longtail")),
    ("the long tail's head classes",
     "tail classes 4, 6, 7 (Highway, Pasture, PermanentCrop) seen 19, 10, 36 times; the other "
     "seven not stated",
     "the other seven at their full train-split counts (`hw2` preset; `n_max` caps them)",
     ("C-longtail",)),
    ("C's pretrained ResNet-18 recipe", "\"only 100 epochs\"; optimizer, LR not stated",
     "SGD lr 0.01 (momentum 0.9, weight decay 1e-4), cosine, 100 epochs, crop + flip",
     ("C-longtail",)),
    ("class-balanced β", "not in the report (an extension)",
     "β = 0.9999 (Cui et al.'s default)", ("C-longtail",)),
    ("logit adjustment", "not in the report (an extension)",
     "not trained: at τ = 1 it is Balanced Softmax (log π and log n differ by a constant); "
     "post-hoc adjustment with τ chosen on validation from 0–2 covers τ ≠ 1", ("C-longtail",)),
]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(notebook: str | None = None) -> str:
    """The table as Markdown: the rows that concern `notebook` (None: all, with a column naming
    the notebooks)."""
    rows = [r for r in ROWS if notebook is None or notebook in r[3]]
    if notebook is not None and not rows:
        raise ValueError(f"no reconstruction concerns notebook {notebook!r}; notebooks: "
                         f"{sorted({n for r in ROWS for n in r[3]})}")
    head = "| where the report is silent | the report | this study |"
    rule = "|---|---|---|"
    if notebook is None:
        head, rule = head + " notebooks |", rule + "---|"
    lines = [head, rule]
    for what, report, here, nbs in rows:
        line = f"| {_cell(what)} | {_cell(report)} | {_cell(here)} |"
        lines.append(line + (f" {', '.join(nbs)} |" if notebook is None else ""))
    return "\n".join(lines)


def block(notebook: str):
    """The notebook's "Reconstructions" block (IPython Markdown, headed)."""
    from IPython.display import Markdown

    return Markdown(f"### Reconstructions\n\nWhere the HW2 report is silent, what this notebook "
                    f"does (`hw2lib.study.reconstructions`):\n\n{markdown(notebook)}")
