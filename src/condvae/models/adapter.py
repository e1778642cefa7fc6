"""Your own VAE: wrap a plain PyTorch decoder (and optionally encoder) in the model protocol.

Every conditioning method needs only the prior p(z) = N(0, I), the per-dimension decoder
likelihood p(x_d | z) and, for some methods, an encoder. ``wrap`` supplies the protocol around
an ``nn.Module``:

- ``decoder(z)`` maps ``[N, latent_dim]`` to either the likelihood's raw parameters
  ``[N, *data_shape]`` (Bernoulli logits, Gaussian means; ``[N, 2C, H, W]`` for the
  discretised logistic's means and log-scales) or directly to a ``torch.distributions``
  object with batch shape ``[N, *data_shape]``;
- ``encoder(x)``, optional, maps ``[N, *data_shape]`` to ``(loc, scale)`` of a diagonal
  Gaussian q(z | x) or to a distribution with event shape ``[latent_dim]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from condvae.errors import CondVAEError
from condvae.models.base import VAE, diagonal_normal


class WrappedVAE(VAE):
    """A user's decoder (and optional encoder) with the model protocol; see the module docstring."""

    architecture = "wrapped"

    def __init__(
        self,
        decoder: nn.Module,
        latent_dim: int,
        data_shape: tuple[int, ...],
        likelihood: str = "bernoulli",
        encoder: nn.Module | None = None,
        scale: float = 0.1,
    ) -> None:
        super().__init__(tuple(data_shape), latent_dim, likelihood)
        if not isinstance(decoder, nn.Module):
            raise CondVAEError(f"decoder: expected a torch.nn.Module, got {type(decoder).__name__}")
        self.decoder = decoder
        self.encoder = encoder
        if likelihood == "gaussian":
            if not scale > 0:
                raise CondVAEError(f"scale: expected a positive Gaussian noise scale, got {scale!r}")
            with torch.no_grad():
                self.likelihood.log_scale.fill_(math.log(scale))
            self.likelihood.min_scale = min(self.likelihood.min_scale, scale)  # type: ignore[assignment]
        self._checked = False

    def config(self) -> dict[str, Any]:
        raise CondVAEError(
            "save_pretrained: a wrapped user model has no condvae config; save your own module "
            "(the adapter only lends it the conditioning protocol)"
        )

    def decode(self, z: torch.Tensor) -> Distribution:
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim))
        if isinstance(out, Distribution):
            dist = out
            if not self._checked and tuple(dist.batch_shape[1:]) != self.data_shape:
                raise CondVAEError(
                    f"decoder: returned a distribution with batch shape {list(dist.batch_shape)}, "
                    f"expected [N, {', '.join(map(str, self.data_shape))}]"
                )
            self._checked = True
            # Reshape by re-indexing the leading axis: expand() and view() are not generic.
            return _LeadingReshape(dist, lead)
        expected = (self.likelihood.params_per_dim * self.data_shape[0], *self.data_shape[1:])
        if tuple(out.shape[1:]) != expected:
            if math.prod(out.shape[1:]) == math.prod(expected):
                out = out.reshape(out.shape[0], *expected)
            else:
                shape = ", ".join(map(str, expected))
                raise CondVAEError(
                    f"decoder: returned shape {list(out.shape)}, expected [N, {shape}] "
                    f"for a {self.likelihood.name} likelihood"
                )
        return self.likelihood(out.reshape(*lead, *expected))

    def encode(self, x: torch.Tensor) -> Distribution:
        if self.encoder is None:
            raise CondVAEError(
                "encoder: this wrapped model has none; use a method that needs only the decoder "
                "(gvi, planar, spline, hmc, rejection, grid, or importance with proposal='prior')"
            )
        out = self.encoder(x)
        if isinstance(out, Distribution):
            return out
        loc, scale = out
        return diagonal_normal(loc, scale)


class _LeadingReshape(Distribution):
    """A decoder distribution over [N, *data_shape] seen as [*lead, *data_shape]."""

    has_rsample = False

    def __init__(self, base: Distribution, lead: torch.Size) -> None:
        self.base, self.lead = base, tuple(lead)
        super().__init__(batch_shape=torch.Size((*self.lead, *base.batch_shape[1:])), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Broadcasts like any torch distribution: axes where the decoder's leading shape is 1
        and ``value``'s is not are moved in front, so the base sees its own N rows last."""
        tail = tuple(self.base.batch_shape[1:])
        value_lead = tuple(value.shape[: value.dim() - len(tail)])
        full = torch.broadcast_shapes(self.lead, value_lead)
        lead = (1,) * (len(full) - len(self.lead)) + self.lead
        extra = [i for i, (a, s) in enumerate(zip(lead, full, strict=True)) if a == 1 and s > 1]
        own = [i for i in range(len(full)) if i not in extra]
        value = value.expand(*full, *tail).permute(*extra, *own, *range(len(full), len(full) + len(tail)))
        flat = value.reshape(*[full[i] for i in extra], -1, *tail)
        out = self.base.log_prob(flat).reshape(*[full[i] for i in extra], *[full[i] for i in own], *tail)
        order = [*extra, *own]
        inverse = [order.index(i) for i in range(len(full))]
        return out.permute(*inverse, *range(len(full), len(full) + len(tail)))

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean.reshape(self.batch_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        if sample_shape:
            raise CondVAEError("decoder: sample_shape is not supported for wrapped distributions")
        return self.base.sample().reshape(self.batch_shape)


wrap = WrappedVAE  # condvae.wrap(decoder, latent_dim, data_shape, likelihood=..., encoder=...)
