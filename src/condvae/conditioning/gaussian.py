"""The Gaussian cross-coders: mean field and full covariance (gvi), one affine map each."""

from __future__ import annotations

from condvae.conditioning.base import Query
from condvae.conditioning.registry import register
from condvae.conditioning.transforms import Affine
from condvae.conditioning.variational import FlowPosterior


@register("meanfield")
class MeanField(FlowPosterior):
    """q(z) = N(mu, diag(sigma^2)): z = mu + sigma * eps, started at the prior (mu = 0, sigma = 1).

    Arguments:
        steps: Adam steps; samples: C-ELBO draws per step; lr: Adam's learning rate.
        iw: K, inner samples of the importance-weighted C-ELBO it maximises (1: the C-ELBO).

    References:
        Wu, Domke & Sanner, "Conditional Inference in Pre-trained Variational Autoencoders via
        Cross-coding", 2018, arXiv:1805.07785.
    """

    def __init__(
        self, query: Query, *, steps: int = 500, samples: int = 16, lr: float = 0.05, iw: int = 1
    ) -> None:
        flow = [Affine.identity(query.batch, query.latent_dim, diagonal=True)]
        super().__init__(query, flow, steps=steps, samples=samples, lr=lr, iw=iw)


@register("gvi")
class GVI(FlowPosterior):
    """q(z) = N(mu, L L^T): z = mu + L eps, L lower-triangular with a softplus diagonal,

        log |det dz/d eps| = sum_i log L_ii,

    started at the prior (mu = 0, L = I) so that it begins by covering every mode.

    Arguments:
        steps: Adam steps; samples: C-ELBO draws per step; lr: Adam's learning rate.
        iw: K, inner samples of the importance-weighted C-ELBO it maximises (1: the C-ELBO).

    References:
        Wu, Domke & Sanner, "Conditional Inference in Pre-trained Variational Autoencoders via
        Cross-coding", 2018, arXiv:1805.07785 (GVI).
    """

    def __init__(
        self, query: Query, *, steps: int = 500, samples: int = 16, lr: float = 0.05, iw: int = 1
    ) -> None:
        super().__init__(
            query,
            [Affine.identity(query.batch, query.latent_dim)],
            steps=steps,
            samples=samples,
            lr=lr,
            iw=iw,
        )
