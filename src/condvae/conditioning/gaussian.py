"""Gaussian cross-coders: mean field and full covariance (GVI).

meanfield: T(eps) = mu + sigma * eps, diagonal (the lecture notes' mean-field family);
gvi:       T(eps) = mu + L eps, L lower-triangular with a positive (softplus) diagonal,
           log |det dT/d eps| = sum_i log L_ii (paper 001, §3.3.1).
Both start from the prior (mu = 0, L = I) so that they begin by covering every mode.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal

from condvae.conditioning.base import Query
from condvae.conditioning.registry import register
from condvae.conditioning.variational import FlowPosterior

_SOFTPLUS_INV_1 = math.log(math.e - 1)


@register("meanfield")
class MeanField(FlowPosterior):
    def __init__(self, query: Query) -> None:
        super().__init__(query)
        b, d = query.batch, query.latent_dim
        self.loc = self._param(torch.zeros(b, d))
        self.raw_scale = self._param(torch.full((b, d), _SOFTPLUS_INV_1))

    def scale(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.raw_scale)

    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale()
        return self.loc + scale * eps, scale.log().sum(-1).expand(eps.shape[:-1])

    def distribution(self) -> MultivariateNormal:
        return MultivariateNormal(self.loc.detach(), scale_tril=torch.diag_embed(self.scale().detach()))


@register("gvi")
class GVI(FlowPosterior):
    def __init__(self, query: Query) -> None:
        super().__init__(query)
        b, d = query.batch, query.latent_dim
        self.loc = self._param(torch.zeros(b, d))
        self.raw_tril = self._param(torch.diag_embed(torch.full((b, d), _SOFTPLUS_INV_1)))

    def scale_tril(self) -> torch.Tensor:
        raw = self.raw_tril
        diag = torch.nn.functional.softplus(torch.diagonal(raw, dim1=-2, dim2=-1))
        return torch.tril(raw, diagonal=-1) + torch.diag_embed(diag)

    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tril = self.scale_tril()
        z = self.loc + torch.einsum("bij,nbj->nbi", tril, eps)
        log_det = torch.diagonal(tril, dim1=-2, dim2=-1).log().sum(-1)
        return z, log_det.expand(eps.shape[:-1])

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z), ``z.shape[:-1]``."""
        return self.distribution().log_prob(z)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """eps = L^{-1} (z - mu), for z ``[n, B, d]``."""
        tril = self.scale_tril().detach()
        centred = (z - self.loc.detach()).permute(1, 2, 0)  # [B, d, n]
        return torch.linalg.solve_triangular(tril, centred, upper=False).permute(2, 0, 1)

    def distribution(self) -> MultivariateNormal:
        """q(z) as a torch distribution with batch shape [B] (mean, covariance, log_prob)."""
        return MultivariateNormal(self.loc.detach(), scale_tril=self.scale_tril().detach())
