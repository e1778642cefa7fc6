"""A Laplacian pyramid of conditional VAEs (Dorta, Vicente, Agapito, Campbell, Prince & Simpson,
"Laplacian Pyramid of Conditional Variational Autoencoders", 2017).

The image is split into [G_K, L_{K-1}, ..., L_0] (condvae.pyramid.laplacian). Level K, the
coarse image, is a plain VAE; each finer level k models its band-pass residual h = L_k given
the upsampled coarser image c = up(G_{k+1}) with a conditional VAE whose *prior* is a network
of the coarser level:

    p(h, z | c) = N(z; R_k(c), S_k(c)) p(h | z, c),     q(z | h, c)
    ELBO_k      = E_q log p(h | z, c) - lambda_k KL(q(z | h, c) || N(R_k(c), S_k(c)))

Levels are trained greedily, coarse to fine, each with its own lambda_k. What a finer level
conditions on in training is the ``condition`` setting:

- ``"truth"`` (Dorta et al.): c = up(G_{k+1}), the true coarser image, and h = L_k;
- ``"reconstruction"`` (default): c = up(G^_{k+1}), the image the trained levels above
  reconstruct (posterior means, decoder means), and h = G_k - c. The level then also learns to
  correct the coarser levels' errors instead of adding its band to them, and sees in training
  the kind of coarse image (a decoder mean) it is given when sampling. On the truth, h = L_k.

Each finer level's latent is one vector (``latent="vector"``) or a map on a coarse grid
(``latent="map"``: each latent explains a patch, which suits local detail and needs no large
linear layers; the bundled pyramids use maps).

At use, each level conditions on the reconstruction (or sample) of the levels above, so fixing
the coarse levels and sampling the finer ones (partial sampling), or painting a coarse image and
sampling detail for it (editing), are the same loop started at different levels.
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
from condvae.pyramid.laplacian import gaussian_pyramid, laplacian_pyramid, reconstruct, upsample

CONDITIONS = ("reconstruction", "truth")


def _down(c_in: int, channels: list[int]) -> list[nn.Module]:
    """Stride-2 4x4 convolutions: a map of channels[-1] at 1 / 2^len(channels) of the size."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip([c_in, *channels[:-1]], channels, strict=True):
        layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.ELU()]
    return layers


def _up(channels: list[int]) -> list[nn.Module]:
    """Transposed stride-2 convolutions back to full size, channels[0] wide."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(channels[::-1], [*channels[::-1][1:], channels[0]], strict=True):
        layers += [nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1), nn.ELU()]
    return layers


LATENTS = ("vector", "map")


class ResidualLevel(nn.Module):
    """One finer level: q(z | h, c), the prior N(R(c), S(c)) and p(h | z, c), h and c [B, C, H, W].

    ``latent="vector"``: z has ``latent_dim`` entries, reached through a linear layer of
    ``hidden`` units; ``latent="map"``: z is a [latent_dim, H / 2^s, W / 2^s] map at the bottom
    of the s = len(channels) stride-2 convolutions, so each latent explains a patch (fine detail
    is local) and the level needs no large linear layers.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        latent_dim: int,
        channels: list[int],
        hidden: int,
        latent: str = "vector",
    ) -> None:
        super().__init__()
        c, height, width = shape
        factor = 2 ** len(channels)
        if height % factor or width % factor:
            raise CondVAEError(
                f"channels: {len(channels)} stride-2 layers do not fit a {height}x{width} level"
            )
        if latent not in LATENTS:
            raise CondVAEError(f"latent: expected one of {', '.join(LATENTS)}, got {latent!r}")
        self.shape, self.latent_dim = shape, latent_dim
        bottom = (channels[-1], height // factor, width // factor)
        if latent == "map":

            def head(c_in: int) -> nn.Sequential:
                return nn.Sequential(
                    *_down(c_in, channels), nn.Conv2d(channels[-1], 2 * latent_dim, 3, padding=1)
                )

            into: list[nn.Module] = [nn.Conv2d(latent_dim, channels[-1], 3, padding=1), nn.ELU()]
        else:

            def head(c_in: int) -> nn.Sequential:
                flat = [nn.Flatten(), nn.Linear(math.prod(bottom), hidden), nn.ELU()]
                return nn.Sequential(*_down(c_in, channels), *flat, nn.Linear(hidden, 2 * latent_dim))

            into = [nn.Linear(latent_dim, hidden), nn.ELU(), nn.Linear(hidden, math.prod(bottom)), nn.ELU()]
            into.append(nn.Unflatten(1, bottom))
        self.encoder, self.prior_net = head(2 * c), head(c)
        self.trunk = nn.Sequential(*into, *_up(channels))  # z -> a full-size feature map
        self.head = nn.Sequential(  # [features, c] -> the residual's mean
            nn.Conv2d(channels[0] + c, channels[0], 3, padding=1),
            nn.ELU(),
            nn.Conv2d(channels[0], c, 3, padding=1),
        )
        self.likelihood = GaussianLikelihood(shape, min_scale=1e-3)

    @staticmethod
    def _gaussian(raw: torch.Tensor) -> Normal:
        loc, pre = raw.chunk(2, dim=1)  # [B, 2d] or [B, 2d, h, w]
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
        return rec - kl_weight * kl_divergence(q, self.prior(c)).flatten(1).sum(1)


def _draw(
    dist: torch.distributions.Distribution, temperature: float, shape: tuple[int, ...] = ()
) -> torch.Tensor:
    """z = mean + T * sd * eps for a (diagonal) Gaussian; T = 1 is an ordinary draw."""
    if not (isinstance(temperature, int | float) and 0 <= temperature < float("inf")):
        raise CondVAEError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    if temperature == 1:
        return dist.sample(shape)
    eps = torch.randn(torch.Size(shape) + dist.batch_shape + dist.event_shape, device=dist.mean.device)
    return dist.mean + temperature * dist.stddev * eps


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
        condition: str = "reconstruction",
        latent: str = "vector",
        bottom: int = 8,
    ) -> None:
        super().__init__()
        c, height, width = (int(s) for s in data_shape)
        self.bottom = int(bottom)
        if self.bottom < 1:
            raise CondVAEError(f"bottom: expected the side of the latent maps' grid (>= 1), got {bottom}")
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
        if condition not in CONDITIONS:
            raise CondVAEError(f"condition: expected one of {', '.join(CONDITIONS)}, got {condition!r}")
        self.condition, self.latent = condition, latent
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
            ResidualLevel(size, d, self._level_channels(size), self.hidden, latent)
            for size, d in zip(sizes, self.latent_dims, strict=True)
        )
        self.card: dict[str, Any] = {}

    def _level_channels(self, size: tuple[int, int, int]) -> list[int]:
        """Stride-2 layers halving the level while it is above ``bottom`` (8: 64x64 gets 3, 28x28
        gets 2, down to 7x7) and even, at least one; widths from ``channels``."""
        depth, side = 0, min(size[1:])
        while side > self.bottom and all(s % 2 ** (depth + 1) == 0 for s in size[1:]):
            depth, side = depth + 1, side // 2
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
            "condition": self.condition,
            "latent": self.latent,
            "bottom": self.bottom,
        }

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise CondVAEError(
                f"x: expected images [B, {', '.join(map(str, self.data_shape))}], got {list(x.shape)}"
            )
        return x

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[G_K, L_{K-1}, ..., L_0] of x [B, C, H, W]."""
        return laplacian_pyramid(self._check(x), self.levels)

    def _refine(self, level: int, g: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The image of finer level ``level`` (1-based) reconstructed from its Gaussian level g
        and the coarser image: c + mean of p(h | z = mean of q(z | g - c, c), c)."""
        finer: ResidualLevel = self.finer[level - 1]  # type: ignore[assignment]
        c = upsample(image)
        return c + finer.decode(finer.encode(g - c, c).mean, c).mean

    def _coarser_image(self, gauss: list[torch.Tensor], level: int) -> torch.Tensor:
        """What finer level ``level`` conditions on in training: the true coarser Gaussian level
        or the one the levels above reconstruct (``condition``); no gradient reaches them."""
        coarser = gauss[self.levels - level + 1]  # gauss is finest first; level 1 sits under G_K
        if self.condition == "truth":
            return coarser
        with torch.no_grad():
            return self._reconstruct_to(gauss, level - 1)

    def _reconstruct_to(self, gauss: list[torch.Tensor], level: int) -> torch.Tensor:
        """The image of level ``level`` (0 = coarse): the coarse VAE's reconstruction refined by
        finer levels 1..level, each given the reconstruction of the levels above."""
        coarse: VAE = self.coarse  # type: ignore[assignment]
        image = coarse.reconstruct(gauss[-1])
        for k in range(1, level + 1):
            image = self._refine(k, gauss[self.levels - k], image)
        return image

    def level_elbo(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """ELBO of level ``level`` (0 = the coarse VAE, then finer) given its training-time
        coarser image (``condition``): h = G_k - up(coarser)."""
        gauss = gaussian_pyramid(self._check(x), self.levels)
        if level == 0:
            coarse: VAE = self.coarse  # type: ignore[assignment]
            return coarse.elbo(gauss[-1], beta=self.kl_weights[0])
        c = upsample(self._coarser_image(gauss, level))
        h = gauss[self.levels - level] - c
        return self.finer[level - 1].elbo(h, c, self.kl_weights[level])

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Each level's decoder mean at its posterior mean, conditioned on the reconstruction of
        the levels above (so an error of a coarse level is the finer levels' to correct)."""
        return self._reconstruct_to(gaussian_pyramid(self._check(x), self.levels), self.levels)

    @torch.no_grad()
    def sample_levels(
        self,
        n: int = 1,
        start: torch.Tensor | None = None,
        keep: int = 0,
        mean: bool = True,
        temperature: float = 1.0,
    ) -> list[torch.Tensor]:
        """Pyramids [G_K, L_{K-1}, ..., L_0] of n samples, each entry [n * B, C, h, w].

        With ``start`` [B, C, H, W] and ``keep`` >= 1, the ``keep`` coarsest entries are the
        start's own (repeated n times, bit for bit) and only the finer ones are sampled, each
        level conditioned on the image of the levels above (partial sampling); without
        ``start`` every level is sampled (B = 1). ``mean``: decoder means, else draws.
        ``temperature`` T scales every sampled latent's spread, z = mu + T sigma eps (T < 1
        trades variety for cleaner detail; T = 0 gives each level's most likely detail).
        """
        if not isinstance(n, int) or n < 1:
            raise CondVAEError(f"n: expected a positive number of samples, got {n!r}")
        if start is not None:
            if not 1 <= keep <= self.levels + 1:
                raise CondVAEError(f"keep: expected 1 to {self.levels + 1} fixed levels, got {keep}")
            levels = [lv.repeat(n, 1, 1, 1) for lv in self.pyramid(start.to(self.device))[:keep]]
        else:
            coarse: VAE = self.coarse  # type: ignore[assignment]
            p = coarse.decode(_draw(coarse.prior, temperature, (n,)))
            levels = [p.mean if mean else p.sample()]
        return self._sample_finer(levels, mean, temperature)

    def _sample_finer(self, levels: list[torch.Tensor], mean: bool, temperature: float) -> list[torch.Tensor]:
        """Complete a fixed coarse part [G_K, L_{K-1}, ...] by sampling each finer level from
        its prior given the image of the levels above."""
        image = levels[0]
        for residual in levels[1:]:
            image = residual + upsample(image)
        for level in self.finer[len(levels) - 1 :]:
            c = upsample(image)
            p = level.decode(_draw(level.prior(c), temperature), c)
            residual = p.mean if mean else p.sample()
            levels.append(residual)
            image = c + residual
        return levels

    def level_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of the pyramid's images, coarse first."""
        _, height, width = self.data_shape
        return [(height >> k, width >> k) for k in range(self.levels, -1, -1)]

    @torch.no_grad()
    def edit(
        self, painting: torch.Tensor, n: int = 1, mean: bool = True, temperature: float = 1.0
    ) -> torch.Tensor:
        """Samples [n, B, C, H, W] of fine detail for a painted image [B, C, h, w] in [0, 1].

        The painting stands for the Gaussian level G_j of the size it has (the coarse image, or
        any finer level): its own Laplacian pyramid is fixed and the levels below j are sampled
        given it, so the samples' level j is the painting plus what the finer levels add.
        """
        if not isinstance(n, int) or n < 1:
            raise CondVAEError(f"n: expected a positive number of samples, got {n!r}")
        sizes = self.level_sizes()
        channels = self.data_shape[0]
        if painting.dim() != 4 or painting.shape[1] != channels or tuple(painting.shape[-2:]) not in sizes:
            shown = ", ".join(f"{h}x{w}" for h, w in sizes)
            raise CondVAEError(
                f"painting: expected [B, {channels}, h, w] with h x w one of the pyramid's sizes "
                f"({shown}), got {list(painting.shape)}"
            )
        if not torch.isfinite(painting).all() or painting.min() < 0 or painting.max() > 1:
            raise CondVAEError("painting: expected finite pixel values in [0, 1]")
        depth = sizes.index(tuple(painting.shape[-2:]))  # levels coarser than the painting
        painting = painting.to(self.device)
        fixed = laplacian_pyramid(painting, depth) if depth else [painting]
        levels = self._sample_finer([lv.repeat(n, 1, 1, 1) for lv in fixed], mean, temperature)
        return reconstruct(levels).reshape(n, -1, *self.data_shape)

    def sample(self, n: int = 1, **options: Any) -> torch.Tensor:
        """Images [n, B, C, H, W] from :meth:`sample_levels` (the same keyword options)."""
        return reconstruct(self.sample_levels(n, **options)).reshape(n, -1, *self.data_shape)
