"""A Laplacian pyramid of conditional VAEs (paper 002, design.md §4.4).

The image is split into [G_K, L_{K-1}, ..., L_0] (condvae.pyramid.laplacian). Level K, the
coarse image, is a plain VAE; each finer level k models its band-pass residual h = L_k given
the upsampled coarser image c = up(G_{k+1}) with a conditional VAE whose *prior* is a network
of the coarser level:

    p(h, z | c) = N(z; R_k(c), S_k(c)) p(h | z, c),     q(z | h, c)
    ELBO_k      = E_q log p(h | z, c) - lambda_k KL(q(z | h, c) || N(R_k(c), S_k(c)))

Levels are trained greedily, coarse to fine, each on the true coarser image (its own
lambda_k). At use, each level conditions on the reconstruction (or sample) of the levels above,
so fixing the coarse levels and sampling the finer ones (partial sampling), or painting a coarse
image and sampling detail for it (editing), are the same loop started at different levels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from condvae.errors import CondVAEError
from condvae.models import VAE, build_model
from condvae.models.likelihoods import GaussianLikelihood
from condvae.pyramid.laplacian import laplacian_pyramid, reconstruct, upsample


def _conv_net(c_in: int, channels: list[int], size: tuple[int, int], out: int, hidden: int) -> nn.Sequential:
    """Stride-2 4x4 convolutions, then a linear layer to ``out`` features."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip([c_in, *channels[:-1]], channels, strict=True):
        layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.ELU()]
    flat = channels[-1] * (size[0] >> len(channels)) * (size[1] >> len(channels))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, hidden), nn.ELU(), nn.Linear(hidden, out))


class ResidualLevel(nn.Module):
    """One finer level: q(z | h, c), the prior N(R(c), S(c)) and p(h | z, c), h and c [B, C, H, W]."""

    def __init__(
        self, shape: tuple[int, int, int], latent_dim: int, channels: list[int], hidden: int
    ) -> None:
        super().__init__()
        c, height, width = shape
        factor = 2 ** len(channels)
        if height % factor or width % factor:
            raise CondVAEError(
                f"channels: {len(channels)} stride-2 layers do not fit a {height}x{width} level"
            )
        self.shape, self.latent_dim = shape, latent_dim
        self.encoder = _conv_net(2 * c, channels, (height, width), 2 * latent_dim, hidden)
        self.prior_net = _conv_net(c, channels, (height, width), 2 * latent_dim, hidden)
        self.bottom = (channels[-1], height // factor, width // factor)
        dec: list[nn.Module] = [
            nn.Linear(latent_dim, hidden),
            nn.ELU(),
            nn.Linear(hidden, math.prod(self.bottom)),
            nn.ELU(),
        ]
        dec.append(nn.Unflatten(1, self.bottom))
        for n_in, n_out in zip(channels[::-1], [*channels[::-1][1:], channels[0]], strict=True):
            dec += [nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1), nn.ELU()]
        self.trunk = nn.Sequential(*dec)  # z -> a full-size feature map
        self.head = nn.Sequential(  # [features, c] -> the residual's mean
            nn.Conv2d(channels[0] + c, channels[0], 3, padding=1),
            nn.ELU(),
            nn.Conv2d(channels[0], c, 3, padding=1),
        )
        self.likelihood = GaussianLikelihood(shape, min_scale=1e-3)

    @staticmethod
    def _gaussian(raw: torch.Tensor) -> Normal:
        loc, pre = raw.chunk(2, dim=-1)
        return Normal(loc, nn.functional.softplus(pre) + 1e-4, validate_args=False)

    def encode(self, h: torch.Tensor, c: torch.Tensor) -> Normal:
        return self._gaussian(self.encoder(torch.cat([h, c], 1)))

    def prior(self, c: torch.Tensor) -> Normal:
        """N(R_k(c), S_k(c)): the prior of this level's latent is a network of the coarser level."""
        return self._gaussian(self.prior_net(c))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> Normal:
        return self.likelihood(self.head(torch.cat([self.trunk(z), c], 1)))  # type: ignore[return-value]

    def elbo(self, h: torch.Tensor, c: torch.Tensor, kl_weight: float = 1.0) -> torch.Tensor:
        q = self.encode(h, c)
        rec = self.decode(q.rsample(), c).log_prob(h).flatten(1).sum(1)
        return rec - kl_weight * kl_divergence(q, self.prior(c)).sum(1)


class PyramidVAE(nn.Module):
    """[coarse VAE, ResidualLevel K-1, ..., ResidualLevel 0] over a ``levels``-deep pyramid."""

    architecture = "pyramid"

    def __init__(
        self,
        data_shape: tuple[int, ...] = (1, 64, 64),
        levels: int = 2,
        coarse: dict[str, Any] | None = None,
        latent_dims: list[int] | tuple[int, ...] = (16, 16),
        channels: list[int] | tuple[int, ...] = (32, 64),
        hidden: int = 256,
        kl_weights: list[float] | tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        c, height, width = (int(s) for s in data_shape)
        if len(latent_dims) != levels:
            raise CondVAEError(
                f"latent_dims: expected one per finer level ({levels}), got {list(latent_dims)}"
            )
        if height % 2**levels or width % 2**levels:
            raise CondVAEError(f"data_shape: {height}x{width} is not divisible by 2^{levels}")
        self.data_shape, self.levels = (c, height, width), int(levels)
        self.latent_dims, self.channels, self.hidden = (
            [int(d) for d in latent_dims],
            [int(x) for x in channels],
            int(hidden),
        )
        self.kl_weights = [float(w) for w in (kl_weights or [1.0] * (levels + 1))]
        if len(self.kl_weights) != levels + 1:
            raise CondVAEError(
                f"kl_weights: expected {levels + 1} weights (coarse first), got {self.kl_weights}"
            )
        coarse_shape = [c, height >> levels, width >> levels]
        self.coarse_config = {
            "architecture": "mlp",
            "latent_dim": 16,
            "hidden": [256],
            "likelihood": "gaussian",
            **(coarse or {}),
        }
        self.coarse = build_model({**self.coarse_config, "data_shape": coarse_shape})
        sizes = [(c, height >> k, width >> k) for k in range(levels - 1, -1, -1)]  # coarse to fine
        self.finer = nn.ModuleList(
            ResidualLevel(size, d, self._level_channels(size), self.hidden)
            for size, d in zip(sizes, self.latent_dims, strict=True)
        )
        self.card: dict[str, Any] = {}

    def _level_channels(self, size: tuple[int, int, int]) -> list[int]:
        """Stride-2 layers down to about 8x8 (a 64x64 level gets 3), widths from ``channels``."""
        depth = max(1, int(math.log2(min(size[1:]))) - 3)
        while min(size[1:]) % 2**depth:
            depth -= 1
        return [self.channels[min(i, len(self.channels) - 1)] for i in range(max(depth, 1))]

    def config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "data_shape": list(self.data_shape),
            "levels": self.levels,
            "coarse": self.coarse_config,
            "latent_dims": self.latent_dims,
            "channels": self.channels,
            "hidden": self.hidden,
            "kl_weights": self.kl_weights,
        }

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        if tuple(x.shape[1:]) != self.data_shape:
            raise CondVAEError(
                f"x: expected images [B, {', '.join(map(str, self.data_shape))}], got {list(x.shape)}"
            )
        return laplacian_pyramid(x, self.levels)

    def level_elbo(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """ELBO of level ``level`` (0 = the coarse VAE, then finer), on the true coarser image."""
        pyr = self.pyramid(x)
        if level == 0:
            coarse: VAE = self.coarse  # type: ignore[assignment]
            return coarse.elbo(pyr[0], beta=self.kl_weights[0])
        image = pyr[0]
        for residual in pyr[1:level]:
            image = residual + upsample(image)
        return self.finer[level - 1].elbo(pyr[level], upsample(image), self.kl_weights[level])

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Each level's decoder mean at its posterior mean, conditioned on the levels above."""
        pyr = self.pyramid(x)
        coarse: VAE = self.coarse  # type: ignore[assignment]
        image = coarse.reconstruct(pyr[0])
        for level, residual in zip(self.finer, pyr[1:], strict=True):
            c = upsample(image)
            image = c + level.decode(level.encode(residual, c).mean, c).mean
        return image

    @torch.no_grad()
    def sample_levels(
        self, n: int = 1, start: torch.Tensor | None = None, keep: int = 0, mean: bool = True
    ) -> list[torch.Tensor]:
        """Pyramids [G_K, L_{K-1}, ..., L_0] of n samples, each entry [n * B, C, h, w].

        With ``start`` [B, C, H, W] and ``keep`` >= 1, the ``keep`` coarsest entries are the
        start's own (repeated n times, bit for bit) and only the finer ones are sampled, each
        level conditioned on the image of the levels above (partial sampling); without
        ``start`` every level is sampled (B = 1). ``mean``: decoder means, else draws.
        """
        if not isinstance(n, int) or n < 1:
            raise CondVAEError(f"n: expected a positive number of samples, got {n!r}")
        if start is not None:
            if not 1 <= keep <= self.levels + 1:
                raise CondVAEError(f"keep: expected 1 to {self.levels + 1} fixed levels, got {keep}")
            levels = [lv.repeat(n, 1, 1, 1) for lv in self.pyramid(start.to(self.device))[:keep]]
        else:
            coarse: VAE = self.coarse  # type: ignore[assignment]
            p = coarse.decode(coarse.prior.sample((n,)))
            levels = [p.mean if mean else p.sample()]
        image = levels[0]
        for residual in levels[1:]:
            image = residual + upsample(image)
        for level in self.finer[len(levels) - 1 :]:
            c = upsample(image)
            p = level.decode(level.prior(c).sample(), c)
            residual = p.mean if mean else p.sample()
            levels.append(residual)
            image = c + residual
        return levels

    def sample(
        self, n: int = 1, start: torch.Tensor | None = None, keep: int = 0, mean: bool = True
    ) -> torch.Tensor:
        """Images [n, B, C, H, W] from :meth:`sample_levels` (same arguments)."""
        return reconstruct(self.sample_levels(n, start, keep, mean)).reshape(n, -1, *self.data_shape)
