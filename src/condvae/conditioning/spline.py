"""The neural-spline cross-coder: spline coupling layers followed by an affine map."""

from __future__ import annotations

import torch

from condvae.conditioning.base import Query
from condvae.conditioning.registry import register
from condvae.conditioning.transforms import Affine, SplineCoupling
from condvae.conditioning.variational import FlowPosterior
from condvae.errors import CondVAEError


@register("spline")
class Spline(FlowPosterior):
    """q(z): z = mu + L g(eps), g = c_K o ... o c_1 neural-spline coupling layers.

    Each c_k keeps half of the coordinates (alternating) and moves the other half through
    monotonic rational-quadratic splines on [-bound, bound] (identity outside) whose bins and
    knot slopes come from a per-query MLP of the kept half (``transforms.SplineCoupling``).
    Every spline starts as the identity, so the flow starts as gvi's Gaussian; every map is
    invertible, so ``log_prob`` works at any z.

    Arguments:
        steps: Adam steps; samples: C-ELBO draws per step; lr: Adam's learning rate.
        iw: K, inner samples of the importance-weighted C-ELBO it maximises (1: the C-ELBO).
        layers: the number of coupling layers.
        bins: the number of spline bins.
        hidden: the width of the conditioner MLP.
        bound: the splines' half-width (eps beyond it passes unchanged).

    References:
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", 2019, arXiv:1906.04032.
    """

    def __init__(
        self,
        query: Query,
        *,
        steps: int = 500,
        samples: int = 16,
        lr: float = 0.05,
        iw: int = 1,
        layers: int = 4,
        bins: int = 8,
        hidden: int = 32,
        bound: float = 5.0,
    ) -> None:
        for name, value in (("layers", layers), ("bins", bins), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
        if not bound > 0:
            raise CondVAEError(f"bound: expected a positive half-width, got {bound!r}")
        d, init = query.latent_dim, query.stream("spline/init")
        flow = []
        for k in range(layers):
            moved = torch.arange(d) % 2 == k % 2 if d > 1 else torch.ones(1, dtype=torch.bool)
            kept = int((~moved).sum())
            w1 = init.normal(hidden, kept, index=k).transpose(0, 1) / max(1, kept) ** 0.5  # [B, H, kept]
            flow.append(SplineCoupling(moved, w1, bins, float(bound)))
        flow.append(Affine.identity(query.batch, d))
        super().__init__(query, flow, steps=steps, samples=samples, lr=lr, iw=iw)
