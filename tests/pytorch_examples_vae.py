"""Test support: the MNIST VAE of the PyTorch examples (github.com/pytorch/examples, vae/main.py),
as a user would have it, importable as a ``source`` factory (``pytorch_examples_vae:VAE``).

The architecture is the examples' one (fc1 784->400, fc21/fc22 400->20 giving (mu, logvar),
fc3 20->400, fc4 400->784 with a sigmoid: ``decode`` returns probabilities); the widths are
keyword arguments so that tests can build a tiny, randomly initialised copy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class VAE(nn.Module):
    def __init__(self, hidden: int = 400, latent: int = 20, pixels: int = 784) -> None:
        super().__init__()
        self.pixels = pixels
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, pixels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, self.pixels))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def tiny(seed: int = 0) -> VAE:
    """A small randomly initialised copy (28x28 images, latent 4): fast in tests."""
    torch.manual_seed(seed)
    return VAE(hidden=32, latent=4)
