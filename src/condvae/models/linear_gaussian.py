"""Linear-Gaussian VAE (factor analysis / probabilistic PCA, Tipping & Bishop 1999): the oracle.

    z ~ N(0, I_d),   x | z ~ N(W z + b, diag(sigma^2))

Everything a conditioning method approximates is available in closed form, for any mask m
(observed dims o, unobserved u); with D_m = diag(m / sigma^2):

    p(z | x_o) = N(mu, S),  S = (I + W^T D_m W)^{-1},  mu = S W^T D_m (x - b)
    log p(x_o) = -1/2 [ n_o log 2 pi + sum_o log sigma^2 + log det(I + W^T D_m W)
                        + sum_o (x - b)^2 / sigma^2 - v^T S v ],   v = W^T D_m (x - b)
    p(x_u | x_o) = N(b_u + W_u mu, W_u S W_u^T + diag(sigma_u^2))

(matrix determinant lemma and Woodbury identity on the marginal N(b_o, W_o W_o^T + diag sigma_o^2)).
The encoder *is* the exact posterior, so this model's ELBO equals log p(x).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, MultivariateNormal

from condvae.models.base import VAE


class LinearGaussianVAE(VAE):
    architecture = "linear_gaussian"

    def __init__(
        self, data_shape: tuple[int, ...] = (8,), latent_dim: int = 2, min_scale: float = 1e-2
    ) -> None:
        super().__init__(data_shape, latent_dim, "gaussian")
        self.likelihood.min_scale = min_scale  # type: ignore[assignment]
        self.data_dim = math.prod(self.data_shape)
        self.weight = nn.Parameter(torch.randn(self.data_dim, latent_dim) / math.sqrt(latent_dim))
        self.bias = nn.Parameter(torch.zeros(self.data_dim))

    @classmethod
    def random(cls, data_dim: int, latent_dim: int, noise: float = 0.5, seed: int = 0) -> LinearGaussianVAE:
        """A model with random W, b and per-dimension noise scales around ``noise``."""
        gen = torch.Generator().manual_seed(seed)
        model = cls((data_dim,), latent_dim)
        with torch.no_grad():
            model.weight.copy_(torch.randn(data_dim, latent_dim, generator=gen))
            model.bias.copy_(torch.randn(data_dim, generator=gen))
            scale = noise * torch.exp(0.3 * torch.randn(data_dim, generator=gen))
            model.likelihood.log_scale.copy_(scale.log())
        return model

    def config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "data_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "min_scale": self.likelihood.min_scale,
        }

    def noise_scale(self) -> torch.Tensor:
        """sigma, flat ``[D]``."""
        return self.likelihood.log_scale.exp().clamp_min(self.likelihood.min_scale).flatten()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(start_dim=x.dim() - len(self.data_shape))

    def decode(self, z: torch.Tensor) -> Distribution:
        mean = z @ self.weight.T + self.bias
        return self.likelihood(mean.unflatten(-1, self.data_shape))

    def encode(self, x: torch.Tensor) -> Distribution:
        return self.posterior(x)

    def _posterior_terms(
        self, x: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat residual r = m (x - b), D_m diagonal, precision P and v = W^T D_m r."""
        x = self._flat(x)
        m = torch.ones_like(x) if mask is None else self._flat(mask).to(x.dtype)
        d_m = m / self.noise_scale() ** 2
        r = m * (x - self.bias)
        eye = torch.eye(self.latent_dim, dtype=x.dtype, device=x.device)
        precision = eye + torch.einsum("di,bd,dj->bij", self.weight, d_m, self.weight)
        v = (d_m * r) @ self.weight
        return r, d_m, precision, v

    def posterior(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MultivariateNormal:
        """Exact p(z | x_o), batch ``[B]``."""
        _, _, precision, v = self._posterior_terms(x, mask)
        cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        mean = (cov @ v.unsqueeze(-1)).squeeze(-1)
        return MultivariateNormal(mean, precision_matrix=precision)

    def log_evidence(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x_o), ``[B]``."""
        r, d_m, precision, v = self._posterior_terms(x, mask)
        chol = torch.linalg.cholesky(precision)
        observed = d_m > 0
        n_obs = observed.sum(-1)
        log_var = torch.where(observed, 2 * self.noise_scale().log(), torch.zeros_like(d_m))
        quad = (r**2 * d_m).sum(-1) - (torch.cholesky_solve(v.unsqueeze(-1), chol).squeeze(-1) * v).sum(-1)
        log_det = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (n_obs * math.log(2 * math.pi) + log_var.sum(-1) + log_det + quad)

    def conditional(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(x | x_o) over all D dims: mean ``[B, D]`` (x_o on observed dims) and
        covariance ``[B, D, D]`` (zero rows/columns on observed dims)."""
        post = self.posterior(x, mask)
        m = self._flat(mask).to(x.dtype)
        mean = post.mean @ self.weight.T + self.bias
        mean = m * self._flat(x) + (1 - m) * mean
        cov = self.weight @ post.covariance_matrix @ self.weight.T
        cov = cov + torch.diag_embed(self.noise_scale() ** 2).expand_as(cov)
        keep = (1 - m).unsqueeze(-1) * (1 - m).unsqueeze(-2)
        return mean, cov * keep

    def query_log_likelihood(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Exact log p(y | x_o) = log p(x) - log p(x_o), ``[B]``."""
        return self.log_evidence(x) - self.log_evidence(x, mask)
