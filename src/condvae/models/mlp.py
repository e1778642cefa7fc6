"""Fully connected VAE (Kingma & Welling 2014, appendix C), any per-dimension likelihood.

Encoder x -> hidden... -> (mu, softplus-scale) of q(z | x); decoder z -> hidden... -> the
likelihood parameters of every data dimension. Paper 001's MNIST model is
``MLPVAE((1, 28, 28), latent_dim=2, hidden=[64])`` with a Bernoulli likelihood.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from condvae.errors import CondVAEError
from condvae.models.base import VAE, diagonal_normal
from condvae.models.precision import decoder_forward

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class ObservedRows(NamedTuple):
    """The fast path's precomputation for a fixed evidence (see ``MLPVAE.prepare``)."""

    index: torch.Tensor  # [B, n] flat observed dims, padded
    valid: torch.Tensor  # [B, n] False on padding
    x: torch.Tensor  # [B, n] the observed values
    weight: torch.Tensor  # [B, n, P, h] last-layer rows
    bias: torch.Tensor  # [B, n, P]


class MLPVAE(VAE):
    architecture = "mlp"

    def __init__(
        self,
        data_shape: tuple[int, ...] = (1, 28, 28),
        latent_dim: int = 2,
        hidden: list[int] | tuple[int, ...] = (512, 512),
        likelihood: str = "bernoulli",
        activation: str = "relu",
    ) -> None:
        super().__init__(data_shape, latent_dim, likelihood)
        if activation not in ACTIVATIONS:
            raise CondVAEError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise CondVAEError(f"hidden: expected a non-empty list of positive widths, got {hidden}")
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        data_dim = math.prod(self.data_shape)
        self.encoder = mlp([data_dim, *self.hidden, 2 * latent_dim], activation)
        n_out = self.likelihood.params_per_dim * data_dim
        self.decoder = mlp([latent_dim, *self.hidden[::-1], n_out], activation)

    def config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "data_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "likelihood": self.likelihood.name,
            "activation": self.activation,
        }

    def encode(self, x: torch.Tensor) -> Distribution:
        h = self.encoder(x.flatten(start_dim=x.dim() - len(self.data_shape)))
        loc, pre_scale = h.chunk(2, dim=-1)
        return diagonal_normal(loc, nn.functional.softplus(pre_scale) + 1e-4)

    @torch.no_grad()
    def prepare(self, x: torch.Tensor, mask: torch.Tensor) -> ObservedRows | None:
        """The last layer's rows of each query's observed dims, when at most half are observed."""
        data_dim = math.prod(self.data_shape)
        if mask.shape[0] != x.shape[0] or x.dim() != len(self.data_shape) + 1:
            return None
        flat_mask = mask.reshape(mask.shape[0], data_dim)
        counts = flat_mask.sum(1)
        widest = int(counts.max())
        if widest > data_dim // 2:
            return None
        # Observed dims first (stable sort keeps their order); padding slots are masked out.
        index = torch.argsort((~flat_mask).to(torch.int8), dim=1, stable=True)[:, :widest]  # [B, n]
        valid = torch.arange(widest, device=x.device) < counts[:, None]
        x_sel = torch.gather(x.reshape(x.shape[0], data_dim), 1, index)
        last: nn.Linear = self.decoder[-1]  # type: ignore[assignment]
        params = self.likelihood.params_per_dim
        rows = index[..., None] + data_dim * torch.arange(params, device=x.device)  # [B, n, P]
        return ObservedRows(index, valid, x_sel, last.weight[rows], last.bias[rows])

    def log_likelihood(
        self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None, prepared: Any = None
    ) -> torch.Tensor:
        """log p(x_o | z); with a sparse mask, only the observed outputs are computed.

        The last layer is restricted to the rows of each query's observed dims (padded to the
        largest count in the batch), cutting its cost by the observed fraction: the fast path
        of the model protocol. Equal to the general path up to float rounding.
        """
        rows = prepared
        if rows is None and mask is not None:
            rows = self._rows_with_grad(x, mask)
        if rows is None:
            return super().log_likelihood(x, z, mask)

        def observed(z: torch.Tensor) -> torch.Tensor:
            hidden = self.decoder[:-1](z)  # [..., B, h]
            return torch.einsum("...bh,bnph->...bnp", hidden, rows.weight) + rows.bias

        raw = decoder_forward(observed, self.device, z)
        per_dim = self.likelihood.log_prob_flat(raw, rows.x, rows.index)
        return (per_dim * rows.valid).sum(-1)

    def _rows_with_grad(self, x: torch.Tensor, mask: torch.Tensor) -> ObservedRows | None:
        """As ``prepare`` but keeping the graph to the weights (for training through it)."""
        prepared = self.prepare(x, mask)
        if prepared is None or not torch.is_grad_enabled():
            return prepared
        last: nn.Linear = self.decoder[-1]  # type: ignore[assignment]
        data_dim = math.prod(self.data_shape)
        rows = prepared.index[..., None] + data_dim * torch.arange(
            self.likelihood.params_per_dim, device=x.device
        )
        return prepared._replace(weight=last.weight[rows], bias=last.bias[rows])

    def decode(self, z: torch.Tensor) -> Distribution:
        raw = decoder_forward(self.decoder, self.device, z)
        shape = (self.likelihood.params_per_dim * self.data_shape[0], *self.data_shape[1:])
        return self.likelihood(raw.unflatten(-1, shape))
