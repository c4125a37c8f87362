"""`hw2 report --rehearse`: the cuts that make every training of a profile a step on the CPU,
and what a rehearsal's pages name as failed."""

from __future__ import annotations

from pathlib import Path

from hw2lib.report.index import read_results

# `hw2 report --rehearse`: every training of the profile (its experiments, seeds, backbones,
# losses) cut to one step of a handful of images, one epoch, on the CPU, and every page rendered:
# a crash in a path only `full` takes shows here before any GPU time is spent. Offline, the
# pretrained backbones go on from random init (said on the pages).
REHEARSAL = {
    "A-train": dict(device="cpu", epochs=1, max_steps=1, batch_size=8, train_per_class=2,
                    val_per_class=1, test_per_class=1, tsne_points=20, allow_random_init=True),
    "A-vis": dict(device="cpu", dream_octaves=2, dream_steps=1, am_steps=2, grid_channels=2,
                  grid_size=32),
    "B-ablation": dict(device="cpu", epochs=1, best_epochs=1, max_steps=1, batch_size=8,
                       train_per_class=2, best_train_per_class=2, val_per_class=1,
                       test_per_class=1),
    "C-longtail": dict(device="cpu", epochs=1, best_epochs=1, max_steps=1, batch_size=8,
                       n_max=4, val_per_class=1, test_per_class=1, crt_epochs=1,
                       allow_random_init=True),
}


def rehearsal_failures(out: Path, names: list[str]) -> list[str]:
    """The runs a rehearsal's notebooks name as failed (their results.json warnings): a
    rehearsal that passes has none."""
    return [f"{nb}: {w}" for nb in names for w in read_results(out, nb)[0].get("warnings", [])
            if " FAILED " in w]
