"""Bidirectional Monte Carlo: a sandwich around log p(x_o) for items simulated from the model.

For (z, x) drawn from p(z) p(x | z), z is an exact draw from p(z | x_o) whatever the mask; an
annealing walk started there and run from the posterior back to the prior has weights whose
mean estimates 1 / p(x_o), so that

    E[ log p_hat_AIS(x_o) ] <= log p(x_o) <= -E[ log mean_k w_k^rev ]

and the width of the bracket bounds the error of the forward (AIS) estimate: of its log
evidence, and, through KL(forward || reverse) <= upper - lower, of its samples.

Reference: Grosse, Ghahramani & Adams, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo", 2015, arXiv:1511.02543.
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch

from condvae.conditioning.ais import AIS, anneal, sigmoid_schedule
from condvae.conditioning.base import Query, reparameterize
from condvae.conditioning.variational import frozen
from condvae.errors import CondVAEError
from condvae.models import VAE
from condvae.streams import seeded


@dataclasses.dataclass
class Sandwich:
    """log p(x_o) bracketed per query: ``lower`` (forward AIS) <= truth <= ``upper`` (reverse)."""

    lower: torch.Tensor  # [B]
    upper: torch.Tensor  # [B]
    forward: AIS  # the forward sampler, whose samples the bracket vouches for

    @property
    def width(self) -> torch.Tensor:
        return self.upper - self.lower


@torch.no_grad()
def simulate(vae: VAE, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n items from the model, x ~ p(x | z) with z ~ p(z): ``x`` [n, *data_shape] and ``z`` [n, d]."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CondVAEError(f"n: expected a positive number of items, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, vae.latent_dim, generator=gen).to(vae.device)
    with frozen(vae), seeded(seed, vae.device):  # p(x | z).sample() draws from torch's global generator
        z = reparameterize(vae.prior, eps)
        x = vae.decode(z).sample()
    return x, z


def sandwich(
    vae: VAE,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    z: torch.Tensor,
    *,
    seed: int = 0,
    particles: int = 128,
    temperatures: int = 1000,
    chains: int = 1,
    leapfrog: int = 5,
    step_size: float = 0.1,
    target_accept: float = 0.65,
) -> Sandwich:
    """Forward AIS and reverse AIS from the exact posterior draws ``z`` [B, d] (the latents
    that generated ``x``; see ``simulate``), both over ``temperatures`` annealing steps.

    The reverse walk runs ``chains`` copies of each z (with different momenta) and never
    resamples; ``upper`` is -log mean_k w_k^rev over them. The forward walk is an ``ais`` fit
    with the other options. Both bounds are stochastic: they hold in expectation. ``mask=None``
    observes everything and brackets log p(x).
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[-1] != vae.latent_dim:
        raise CondVAEError(f"z: expected exact posterior draws [B, {vae.latent_dim}], got {_shape(z)}")
    if not isinstance(chains, int) or isinstance(chains, bool) or chains < 1:
        raise CondVAEError(f"chains: expected a positive integer, got {chains!r}")
    query = Query(vae, x, torch.ones_like(x, dtype=torch.bool) if mask is None else mask, seed, complete=True)
    if z.shape[0] != query.batch:
        raise CondVAEError(f"z: expected one exact draw per query ({query.batch}), got {z.shape[0]}")
    options = {"leapfrog": leapfrog, "step_size": step_size, "target_accept": target_accept}
    with frozen(vae), torch.enable_grad():
        forward = cast(AIS, AIS.fit(query, particles=particles, temperatures=temperatures, **options))
    start = z.to(query.x.device, torch.float32)[None].expand(chains, -1, -1).contiguous()
    with frozen(vae), torch.no_grad():
        walk = anneal(
            query,
            start,
            sigmoid_schedule(temperatures).flip(0),
            leapfrog_steps=leapfrog,
            step_size=step_size,
            target_accept=target_accept,
            resample=0.0,
            stream="bdmc/reverse",
        )
    upper = -(torch.logsumexp(walk.log_w, 0) - math.log(chains))
    return Sandwich(lower=forward.log_evidence(), upper=upper, forward=forward)


def _shape(value: object) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
