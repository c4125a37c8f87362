"""Small networks and loader wrappers several test modules use."""

import torch
from torch import nn


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
