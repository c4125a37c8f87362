"""Task C's remedies that train no network of their own, applied to a trained cross-entropy
model: post-hoc logit adjustment (Menon et al. 2021) with τ chosen on validation, and decoupled
classifier re-training (cRT, Kang et al. 2020)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hw2lib.nets import metrics
from hw2lib.nets.features import extract_features
from hw2lib.nets.losses import posthoc_logit_adjust
from hw2lib.nets.nn_utils import last_linear
from hw2lib.train.experiment import make_loader

# Post-hoc logit adjustment: τ is chosen on validation (balanced accuracy) from this grid.
POSTHOC_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def retrain_classifier(model, ds, train_idx, cfg: dict, device, *, epochs: int = 10,
                       lr: float = 0.1, batch_size: int = 256, seed: int = 0):
    """Decoupled classifier re-training (cRT, Kang et al. 2020): freeze the backbone, re-initialise
    the last Linear layer and train it alone with class-balanced sampling. Features are computed
    once (no augmentation). Returns the model with its new head (in eval mode)."""
    loader = make_loader(ds, train_idx, cfg, device, train=False, batch_size=batch_size)
    feats, labels = extract_features(model, loader, device=device)
    _, head = last_linear(model)
    gen = torch.Generator().manual_seed(seed)
    new = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():  # seeded re-initialisation
        bound = 1 / head.in_features**0.5
        new.weight.uniform_(-bound, bound, generator=gen)
        new.bias.uniform_(-bound, bound, generator=gen)
    x, y = torch.from_numpy(feats), torch.from_numpy(labels)
    counts = torch.bincount(y, minlength=head.out_features).clamp(min=1).double()
    weights = (1.0 / counts)[y]  # each class equally likely per draw
    opt = torch.optim.SGD(new.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    steps = max(1, len(y) // batch_size)
    for _ in range(epochs):
        for _ in range(steps):
            i = torch.multinomial(weights, batch_size, replacement=True, generator=gen)
            loss = nn.functional.cross_entropy(new(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        head.weight.copy_(new.weight)
        head.bias.copy_(new.bias)
    return model.eval()


def posthoc_tau_on_val(logits_val, y_val, counts, taus=POSTHOC_TAUS) -> float:
    """The τ of `taus` whose post-hoc adjustment gives the highest balanced accuracy on the given
    validation images (ties: the smaller τ)."""
    lg = torch.from_numpy(np.asarray(logits_val))
    bal = [metrics.balanced_accuracy(y_val, posthoc_logit_adjust(lg, counts, tau=t).argmax(1)
                                     .numpy()) for t in taus]
    return float(taus[int(np.argmax(bal))])
