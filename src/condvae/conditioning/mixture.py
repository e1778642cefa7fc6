"""Mixture-of-Gaussians cross-coder: K full-covariance components per query.

    q(z) = sum_k pi_k N(z; mu_k, L_k L_k^T)
    C-ELBO = sum_k pi_k E_{eps}[ log p(x_o, mu_k + L_k eps) - log q(mu_k + L_k eps) ]

Each component is reparameterised separately and weighted by its (learned, softmax) mixture
weight: the stratified estimator of Morningstar et al. (2021), unbiased with gradients for
both the components and the weights. With sparse evidence p(z | x_o) is often multimodal; a
single Gaussian or a short flow then drops modes, and a dropped mode that holds the truth
costs many nats of query likelihood. The components start at K prior draws with half the
prior's scale, so they begin spread over the region the posterior can occupy.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal

from condvae.conditioning.base import Query
from condvae.conditioning.registry import register
from condvae.conditioning.variational import FlowPosterior
from condvae.errors import CondVAEError

_SOFTPLUS_INV_HALF = math.log(math.exp(0.5) - 1)


@register("mixture")
class Mixture(FlowPosterior):
    def __init__(self, query: Query, components: int = 8) -> None:
        super().__init__(query)
        if not isinstance(components, int) or components < 1:
            raise CondVAEError(f"components: expected a positive integer, got {components!r}")
        b, d, k = query.batch, query.latent_dim, components
        self.components = k
        self.loc = self._param(query.noise(-7, k).permute(1, 0, 2))  # [B, K, d]
        self.raw_tril = self._param(torch.diag_embed(torch.full((b, k, d), _SOFTPLUS_INV_HALF)))
        self.logits = self._param(torch.zeros(b, k))

    def scale_tril(self) -> torch.Tensor:
        raw = self.raw_tril
        diag = torch.nn.functional.softplus(torch.diagonal(raw, dim1=-2, dim2=-1)) + 1e-5
        return torch.tril(raw, diagonal=-1) + torch.diag_embed(diag)

    def components_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log pi_k + log N(z; mu_k, Sigma_k) for z [..., B, d] -> [..., B, K]."""
        dist = MultivariateNormal(self.loc, scale_tril=self.scale_tril())
        return torch.log_softmax(self.logits, -1) + dist.log_prob(z.unsqueeze(-2))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.components_log_prob(z), -1)

    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise CondVAEError("method 'mixture' is not a single push-forward of eps; use sample()")

    def _per_component(self, eps: torch.Tensor) -> torch.Tensor:
        """eps [S, B, K, d] -> z [S, B, K, d] from each component."""
        return self.loc + torch.einsum("bkij,sbkj->sbki", self.scale_tril(), eps)

    def _noise(self, counter: int, n: int) -> torch.Tensor:
        k = self.components
        return self.query.noise(counter, n * k).reshape(n, k, self.query.batch, -1).transpose(1, 2)

    def objective(self, step: int, samples: int) -> torch.Tensor:
        """The stratified C-ELBO per query, ``samples`` split over the components, ``[B]``."""
        per_component = max(1, samples // self.components)
        z = self._per_component(self._noise(step, per_component))  # [S, B, K, d]
        log_q = self.log_prob(z.transpose(1, 2)).transpose(1, 2)  # [S, B, K]
        log_joint = self.query.log_joint(z.transpose(1, 2)).transpose(1, 2)  # [S, B, K]
        weights = torch.softmax(self.logits, -1)
        return ((log_joint - log_q).mean(0) * weights).sum(-1)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        counter = self._next_counter()
        u = torch.special.ndtr(self.query.noise(counter + (1 << 24), n)[..., 0])  # [n, B]
        cdf = torch.cumsum(torch.softmax(self.logits, -1), -1)  # [B, K]
        pick = torch.searchsorted(cdf, u.T.contiguous()).clamp_max(self.components - 1).T  # [n, B]
        eps = self.query.noise(counter, n)
        loc = torch.gather(self.loc, 1, pick.T[..., None].expand(-1, -1, eps.shape[-1])).transpose(0, 1)
        tril = self.scale_tril()[torch.arange(self.query.batch)[:, None], pick.T].transpose(0, 1)
        return loc + torch.einsum("nbij,nbj->nbi", tril, eps)

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample(n)
        return z, self.log_prob(z)
