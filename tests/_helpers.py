"""Helpers shared by the tests (fixtures live in conftest.py)."""

import torch
from torch import nn


def tiny_cnn(in_channels=3):
    """A three-block CNN with BatchNorm, the smallest backbone that behaves like a real one."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()),
    )


class CountImages(nn.Module):
    """Counts the images that reach it (fx cannot trace it, so it survives folding)."""

    seen = []

    def forward(self, x):
        if len(x) > 1:  # not the one-blank-image shape probes
            CountImages.seen.append(len(x))
        return x


def counting_cnn():
    """tiny_cnn whose first block counts the images it is given in CountImages.seen."""
    blocks = tiny_cnn()
    return nn.Sequential(nn.Sequential(CountImages(), *blocks[0]), *blocks[1:])
