"""The FCN cross-coder: an unconstrained MLP from eps to z, not invertible."""

from __future__ import annotations

from condvae.conditioning.base import Query
from condvae.conditioning.registry import register
from condvae.conditioning.transforms import MLP, Affine
from condvae.conditioning.variational import FlowPosterior
from condvae.errors import CondVAEError

MAX_LATENT = 16


@register("fcn")
class FCN(FlowPosterior):
    """q(z): z = mu + L (eps + W2 tanh(W1 eps + b1)), per query.

    log |det dz/d eps| comes from the Jacobian built row by row with autograd (d backward
    passes, differentiable for training), so latent sizes are limited to ``MAX_LATENT``.
    Nothing keeps the map one to one, so q's density by change of variables, and hence the
    C-ELBO, is not guaranteed to bound log p(x_o): ``diagnostics.guaranteed_bound`` is False
    and ``log_prob`` at arbitrary z is refused.

    Arguments:
        steps: Adam steps; samples: C-ELBO draws per step; lr: Adam's learning rate.
        iw: K, inner samples of the importance-weighted C-ELBO it maximises (1: the C-ELBO).
        hidden: the MLP's width.

    References:
        Wu, Domke & Sanner, "Conditional Inference in Pre-trained Variational Autoencoders via
        Cross-coding", 2018, arXiv:1805.07785 (FCN).
    """

    def __init__(
        self,
        query: Query,
        *,
        steps: int = 500,
        samples: int = 16,
        lr: float = 0.05,
        iw: int = 1,
        hidden: int = 32,
    ) -> None:
        d = query.latent_dim
        if d > MAX_LATENT:
            raise CondVAEError(
                f"method: 'fcn' computes a {d}x{d} Jacobian per sample by autograd; it is limited "
                f"to latent sizes <= {MAX_LATENT} (use gvi, planar or spline)"
            )
        if not isinstance(hidden, int) or hidden < 1:
            raise CondVAEError(f"hidden: expected a positive width, got {hidden!r}")
        init = query.stream("fcn/init").normal(2 * hidden, d).transpose(0, 1)  # [B, 2H, d]
        mlp = MLP(init[:, :hidden] / d**0.5, 0.01 * init[:, hidden:].transpose(1, 2))
        super().__init__(
            query, [mlp, Affine.identity(query.batch, d)], steps=steps, samples=samples, lr=lr, iw=iw
        )
