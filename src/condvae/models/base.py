"""The model protocol every conditioning method relies on.

A VAE here is ``p(z) p_theta(x | z)`` with an amortised encoder ``q_phi(z | x)``:

- ``vae.prior``        a distribution over z with event shape ``[latent_dim]``;
- ``vae.decode(z)``    ``p_theta(x | z)`` as a per-dimension distribution, batch shape
                       ``[..., *data_shape]`` (the likelihood factorises over dimensions);
- ``vae.encode(x)``    ``q_phi(z | x)``, event shape ``[latent_dim]``.

From these the base class derives the masked log-likelihood
``log p(x_o | z) = sum_d m_d log p(x_d | z)``, the ELBO (Kingma & Welling 2014)
``E_q[log p(x | z)] - KL(q(z | x) || p(z))`` and the importance-weighted bound
(Burda et al. 2016) ``log (1/k) sum_i p(x, z_i) / q(z_i | x)``, z_i ~ q(z | x), which tends to
log p(x) as k grows. A user's own model only has to provide the three members above.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from condvae.errors import CondVAEError
from condvae.models.likelihoods import Likelihood, make_likelihood


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    """N(loc, diag(scale^2)) with the last axis as the event."""
    return Independent(Normal(loc, scale, validate_args=False), 1)


class VAE(nn.Module):
    """Base class: a standard-normal prior, an encoder, a decoder and a likelihood head."""

    architecture: ClassVar[str] = ""

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int, likelihood: str) -> None:
        super().__init__()
        if latent_dim < 1:
            raise CondVAEError(f"latent_dim: expected a positive integer, got {latent_dim}")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim = int(latent_dim)
        self.likelihood: Likelihood = make_likelihood(likelihood, self.data_shape)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)
        self.card: dict[str, Any] = {}  # the model card (how trained, test scores), from config.json

    # -- configuration -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments; ``build_model(config)`` rebuilds the model."""
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------
    @property
    def prior(self) -> Distribution:
        """p(z) = N(0, I)."""
        zeros = self._zero.expand(self.latent_dim)
        return diagonal_normal(zeros, torch.ones_like(zeros))

    def encode(self, x: torch.Tensor) -> Distribution:
        """q_phi(z | x) for a batch ``x`` of shape ``[B, *data_shape]``."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> Distribution:
        """p_theta(x | z) for ``z`` of shape ``[..., latent_dim]``; batch ``[..., *data_shape]``."""
        raise NotImplementedError

    # -- derived quantities --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._zero.device

    def check_x(self, x: torch.Tensor, argument: str = "x") -> None:
        """Shape and support checks with errors that name ``argument``."""
        if not isinstance(x, torch.Tensor):
            raise CondVAEError(f"{argument}: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.data_shape:
            raise CondVAEError(
                f"{argument}: expected shape [B, {', '.join(map(str, self.data_shape))}], got {list(x.shape)}"
            )
        self.likelihood.check_support(x, argument)

    def prepare(self, x: torch.Tensor, mask: torch.Tensor) -> Any:
        """Optional fast path: precompute what ``log_likelihood(x, z, mask)`` can reuse while
        the evidence stays fixed (e.g. the decoder rows of the observed dims). The result is
        passed back as ``prepared``; it assumes the model's weights do not change meanwhile.
        ``None`` (the default) means nothing to reuse."""
        return None

    def log_likelihood(
        self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None, prepared: Any = None
    ) -> torch.Tensor:
        """log p(x_o | z) = sum over observed d of log p(x_d | z); shape ``z.shape[:-1]``."""
        per_dim = self.decode(z).log_prob(x)
        if mask is not None:
            per_dim = per_dim * mask
        return per_dim.flatten(start_dim=per_dim.dim() - len(self.data_shape)).sum(-1)

    def elbo(self, x: torch.Tensor, beta: float = 1.0, samples: int = 1) -> torch.Tensor:
        """ELBO per item, ``[B]``: E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)) (analytic KL)."""
        q = self.encode(x)
        z = q.rsample((samples,))
        rec = self.log_likelihood(x, z).mean(0)
        try:
            kl = torch.distributions.kl_divergence(q, self.prior)
        except NotImplementedError:  # no closed form registered: Monte Carlo estimate
            kl = (q.log_prob(z) - self.prior.log_prob(z)).mean(0)
        return rec - beta * kl

    def iwae(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Importance-weighted bound per item with k samples, ``[B]`` (one chunk, no batching)."""
        q = self.encode(x)
        z = q.rsample((k,))
        log_w = self.log_likelihood(x, z) + self.prior.log_prob(z) - q.log_prob(z)
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z) at z = mean of q(z | x)."""
        return self.decode(self.encode(x).mean).mean

    def sample(self, n: int) -> torch.Tensor:
        """Means of p(x | z) for n prior draws z ~ p(z), ``[n, *data_shape]``."""
        return self.decode(self.prior.sample((n,))).mean
