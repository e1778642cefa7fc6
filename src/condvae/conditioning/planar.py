"""Planar-flow cross-coder (Rezende & Mohamed 2015; paper 001, §3.3.2), batched per query.

    h_0 = mu + L eps                             (a full-covariance affine base, as in gvi)
    h_k = h_{k-1} + u_hat_k tanh(w_k^T h_{k-1} + b_k),            k = 1..K
    log |det dh_k/dh_{k-1}| = log |1 + u_hat_k^T psi_k|,  psi_k = (1 - tanh^2(.)) w_k

Each layer stays invertible: u is replaced by u_hat = u + (m(w^T u) - w^T u) w / |w|^2 with
m(a) = -1 + softplus(a + log(e - 1)), so that w^T u_hat = m(w^T u) > -1 and the Jacobian
determinant is positive. (The shift inside softplus makes m(0) = 0, so a layer whose u starts
near 0 starts near the identity: with the textbook m(a) = -1 + softplus(a), u = 0 maps to
u_hat = -0.31 w / |w|^2, a large kick when w is small.)
Starting from the affine base makes the family contain gvi's, so planar is never worse than
gvi at its optimum; the paper's code used 8 to 32 layers.
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import softplus

from condvae.conditioning.base import Posterior, Query
from condvae.conditioning.gaussian import GVI
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError

_SHIFT = math.log(math.e - 1)


@register("planar")
class Planar(GVI):
    log_prob = Posterior.log_prob  # no inverse: only its own samples are scored

    def __init__(self, query: Query, layers: int = 16) -> None:
        super().__init__(query)
        if not isinstance(layers, int) or layers < 1:
            raise CondVAEError(f"layers: expected a positive number of planar layers, got {layers!r}")
        self.layers = layers
        # Small per-query initial directions from the query's own stream (batch-independent).
        init = query.noise(-1, 2 * layers).permute(1, 0, 2)  # [B, 2K, d]
        self.w = self._param(0.1 * init[:, :layers])
        self.u = self._param(0.01 * init[:, layers:])
        self.bias = self._param(torch.zeros(query.batch, layers))

    def u_hat(self) -> torch.Tensor:
        """u constrained so that w^T u_hat > -1 (invertibility), ``[B, K, d]``."""
        wu = (self.w * self.u).sum(-1, keepdim=True)
        w_norm2 = (self.w**2).sum(-1, keepdim=True).clamp_min(1e-12)
        return self.u + (-1 + softplus(wu + _SHIFT) - wu) * self.w / w_norm2

    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, log_det = super().transform(eps)
        u_hat = self.u_hat()
        for k in range(self.layers):
            w_k, u_k = self.w[:, k], u_hat[:, k]
            act = torch.tanh((h * w_k).sum(-1) + self.bias[:, k])  # [n, B]
            psi_u = (1 - act**2) * (w_k * u_k).sum(-1)
            h = h + act.unsqueeze(-1) * u_k
            log_det = log_det + torch.log1p(psi_u.clamp_min(-1 + 1e-6))
        return h, log_det
