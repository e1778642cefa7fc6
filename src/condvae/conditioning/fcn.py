"""FCN cross-coder (paper 001, §3.3.3): an unconstrained MLP from eps to z, per query.

    T(eps) = mu + L eps + W2 tanh(W1 eps + b1)

with log |det dT/d eps| = log |det J| where J is built row by row with autograd (d backward
passes, differentiable for training): affordable only for small latent sizes. Nothing keeps T
invertible, so q's density by change of variables, and hence the C-ELBO, is not guaranteed
to be a lower bound on log p(x_o); the result says so (``guaranteed_bound`` is False).
"""

from __future__ import annotations

import torch

from condvae.conditioning.base import Posterior, Query
from condvae.conditioning.gaussian import GVI
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError

MAX_LATENT = 16


def jacobian_log_det(z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log |det dz/d eps| per sample, by autograd, for z = T(eps) computed elementwise over [n, B]."""
    rows = [
        torch.autograd.grad(z[..., i].sum(), eps, create_graph=True, retain_graph=True)[0]
        for i in range(z.shape[-1])
    ]
    return torch.linalg.slogdet(torch.stack(rows, -2))[1]


@register("fcn")
class FCN(GVI):
    log_prob = Posterior.log_prob  # no inverse: only its own samples are scored
    guaranteed_bound = False

    def __init__(self, query: Query, hidden: int = 32) -> None:
        super().__init__(query)
        d = query.latent_dim
        if d > MAX_LATENT:
            raise CondVAEError(
                f"method: 'fcn' computes a {d}x{d} Jacobian per sample by autograd; it is limited "
                f"to latent sizes <= {MAX_LATENT} (use gvi, planar or spline)"
            )
        if not isinstance(hidden, int) or hidden < 1:
            raise CondVAEError(f"hidden: expected a positive width, got {hidden!r}")
        init = query.noise(-5, 2 * hidden).permute(1, 0, 2)  # [B, 2H, d], batch-independent
        self.w1 = self._param(init[:, :hidden] / d**0.5)  # [B, H, d]
        self.b1 = self._param(torch.zeros(query.batch, hidden))
        self.w2 = self._param(0.01 * init[:, hidden:].transpose(1, 2))  # [B, d, H]

    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            eps = eps if eps.requires_grad else eps.clone().requires_grad_(True)
            z, _ = super().transform(eps)
            hidden = torch.tanh(torch.einsum("bhd,nbd->nbh", self.w1, eps) + self.b1)
            z = z + torch.einsum("bdh,nbh->nbd", self.w2, hidden)
            log_det = jacobian_log_det(z, eps)
        if not torch.is_grad_enabled():
            z, log_det = z.detach(), log_det.detach()
        return z, log_det
