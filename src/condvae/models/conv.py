"""Convolutional VAE with a continuous likelihood (Gaussian or discretised logistic).

Encoder: ``len(channels)`` stride-2 4x4 convolutions (each halves H and W), then a linear
layer to (mu, softplus-scale) of q(z | x). Decoder: the mirror image with transposed
convolutions. H and W must be divisible by ``2 ** len(channels)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from condvae.errors import CondVAEError
from condvae.models.base import VAE, diagonal_normal
from condvae.models.precision import decoder_forward


class ConvVAE(VAE):
    architecture = "conv"

    def __init__(
        self,
        data_shape: tuple[int, ...] = (1, 28, 28),
        latent_dim: int = 16,
        channels: list[int] | tuple[int, ...] = (32, 64),
        hidden: int = 256,
        likelihood: str = "logistic",
    ) -> None:
        super().__init__(data_shape, latent_dim, likelihood)
        if len(self.data_shape) != 3:
            raise CondVAEError(f"data_shape: expected (C, H, W), got {self.data_shape}")
        c_in, height, width = self.data_shape
        factor = 2 ** len(channels)
        if height % factor or width % factor:
            raise CondVAEError(
                f"data_shape: image size {height}x{width} is not divisible by {factor} "
                f"(= 2 ** len(channels)); resize the images or use fewer conv layers"
            )
        self.channels = [int(c) for c in channels]
        self.hidden = int(hidden)
        self.bottom = (self.channels[-1], height // factor, width // factor)
        flat = math.prod(self.bottom)
        act = nn.ELU
        enc: list[nn.Module] = []
        for n_in, n_out in zip([c_in, *self.channels[:-1]], self.channels, strict=True):
            enc += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), act()]
        enc += [
            nn.Flatten(),
            nn.Linear(flat, self.hidden),
            act(),
            nn.Linear(self.hidden, 2 * latent_dim),
        ]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [
            nn.Linear(latent_dim, self.hidden),
            act(),
            nn.Linear(self.hidden, flat),
            act(),
        ]
        dec.append(nn.Unflatten(1, self.bottom))
        outs = [*self.channels[::-1][1:], self.likelihood.params_per_dim * c_in]
        for i, (n_in, n_out) in enumerate(zip(self.channels[::-1], outs, strict=True)):
            dec.append(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                dec.append(act())
        self.decoder = nn.Sequential(*dec)

    def config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "data_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "channels": self.channels,
            "hidden": self.hidden,
            "likelihood": self.likelihood.name,
        }

    def encode(self, x: torch.Tensor) -> Distribution:
        lead = x.shape[:-3]
        h = self.encoder(x.reshape(-1, *self.data_shape)).reshape(*lead, -1)
        loc, pre_scale = h.chunk(2, dim=-1)
        return diagonal_normal(loc, nn.functional.softplus(pre_scale) + 1e-4)

    def decode(self, z: torch.Tensor) -> Distribution:
        lead = z.shape[:-1]
        raw = decoder_forward(self.decoder, self.device, z.reshape(-1, self.latent_dim))
        return self.likelihood(raw.reshape(*lead, *raw.shape[1:]))
