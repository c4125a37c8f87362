"""Small networks, data, loader wrappers and the fit helper several test modules use."""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x))))


class RecordsBenchmarkFlag:
    """A loader wrapper that records torch.backends.cudnn.benchmark when each epoch starts."""

    def __init__(self, loader):
        self.loader, self.generator, self.flags = loader, loader.generator, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.flags.append(torch.backends.cudnn.benchmark)
        return iter(self.loader)


# What every record of fit's history holds (an EMA run adds val_loss_raw and val_acc_raw).
HISTORY_KEYS = {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_bal_acc",
                "seconds", "images_per_s"}


def fit(model, train_loader, val_loader=None, **settings):
    """`engine.fit` with a `Recipe` of the recipe fields among `settings` (epochs, optimizer,
    lr, schedule, mix, ema, seed, ...); the others are fit's own keywords (out_dir, device,
    progress, criterion, max_steps, amp, checkpoint_every)."""
    from hw2lib.train.engine import fit as engine_fit
    from hw2lib.train.recipes import DEFAULTS, Recipe

    recipe = Recipe(**{k: settings.pop(k) for k in list(settings) if k in DEFAULTS})
    return engine_fit(model, (train_loader, val_loader), recipe, **settings)


def make_data(n=24, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 2, 2, generator=g) + 2.0 * nn.functional.one_hot(
        y, 12)[:, :12].reshape(n, 3, 2, 2).float()
    return x, y


def make_loader(x, y, *, batch_size=8, shuffle=True, seed=0):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed))


def make_model(seed=0, dropout=0.3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(16, 3))


def loader_pair(seed=0):
    x, y = make_data()
    return make_loader(x, y, seed=seed), make_loader(x, y, shuffle=False)


FIT_KW = dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
              schedule="cosine", warmup_epochs=1, device="cpu", progress=False)


class CrashAfter:
    """Wraps a loader; the (n+1)-th epoch's iteration raises (a simulated interruption)."""

    def __init__(self, loader, n):
        self.loader, self.left = loader, n
        self.generator = loader.generator

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return iter(self.loader)


class NeverIterate:
    generator = None

    def __len__(self):
        return 1

    def __iter__(self):
        raise AssertionError("training ran although all epochs were done")


class NaNAt(nn.Module):
    """Identity in eval mode; in training, outputs NaN at the `at`-th forward call."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                return x * float("nan")
        return x


def nb_params(notebook: str, **changes) -> dict:
    """A notebook's parameters as its parameters cell defines them (JupyterLab's defaults), with
    `changes`: what `task_*.config(s)` reads in the notebook and in `hw2 plan`."""
    from hw2lib.report.run import notebook_parameters

    return {**{k: p.default for k, p in notebook_parameters(notebook).items()}, **changes}


def run_record(cfg, val, test=None, *, n=1000, run_id=None, **extra) -> dict:
    """A finished run's result as `run_experiment` returns it (the fields the summaries, tables
    and findings read): `cfg` a resolved recipe, accuracies `val` / `test` (balanced the same)."""
    test = val if test is None else test
    return {"config": cfg, "params": 10, "val_acc": val, "test_acc": test, "val_bal_acc": val,
            "test_bal_acc": test, "wall_seconds": 2.0,
            "run_id": run_id or f"{cfg['name']}-{cfg['seed']}", "val_n": n, "test_n": n,
            "history": [], **extra}


def fake_dataset(**attrs):
    """A stand-in for `hw2lib.data.Dataset` with just the attributes a test needs."""
    from types import SimpleNamespace

    return SimpleNamespace(**attrs)
