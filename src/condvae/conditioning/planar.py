"""The planar-flow cross-coder: an affine map followed by planar layers."""

from __future__ import annotations

from condvae.conditioning.base import Query
from condvae.conditioning.registry import register
from condvae.conditioning.transforms import Affine, Planar
from condvae.conditioning.variational import FlowPosterior
from condvae.errors import CondVAEError


@register("planar")
class PlanarFlow(FlowPosterior):
    """q(z): h_0 = mu + L eps (gvi's map), then ``layers`` planar layers

        h_k = h_{k-1} + u_hat_k tanh(w_k^T h_{k-1} + b_k),
        log |det dh_k / dh_{k-1}| = log |1 + (1 - tanh^2(w_k^T h_{k-1} + b_k)) w_k^T u_hat_k|,

    each kept invertible (w^T u_hat > -1, see ``transforms.Planar``). Starting from the affine
    map makes the family contain gvi's, so planar is never worse than gvi at its optimum. The
    inverse has no closed form: ``log_prob`` at arbitrary z is refused.

    Arguments:
        steps: Adam steps; samples: C-ELBO draws per step; lr: Adam's learning rate.
        iw: K, inner samples of the importance-weighted C-ELBO it maximises (1: the C-ELBO).
        layers: the number of planar layers (the cross-coding experiments used 8 to 32).

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015, arXiv:1505.05770.
        Wu, Domke & Sanner, "Conditional Inference in Pre-trained Variational Autoencoders via
        Cross-coding", 2018, arXiv:1805.07785.
    """

    def __init__(
        self,
        query: Query,
        *,
        steps: int = 500,
        samples: int = 16,
        lr: float = 0.05,
        iw: int = 1,
        layers: int = 16,
    ) -> None:
        if not isinstance(layers, int) or layers < 1:
            raise CondVAEError(f"layers: expected a positive number of planar layers, got {layers!r}")
        b, d = query.batch, query.latent_dim
        init = query.stream("planar/init")  # small initial directions: each layer starts near the identity
        wu = [init.normal(2, d, index=k) for k in range(layers)]
        flow = [Affine.identity(b, d), *(Planar(0.1 * w, 0.01 * u) for w, u in wu)]
        super().__init__(query, flow, steps=steps, samples=samples, lr=lr, iw=iw)
