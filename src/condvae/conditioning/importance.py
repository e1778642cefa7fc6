"""Self-normalised importance sampling and sampling-importance-resampling (MIWAE-style).

K particles z_k ~ r(z) per query, weights w_k = p(x_o, z_k) / r(z_k), normalised w_bar_k;
then p(x_o) ≈ (1/K) sum_k w_k and samples are drawn from the particles in proportion to
w_bar (SIR; Rubin 1988, Mattei & Frellsen 2019). The proposal r is, by default, the
pretrained encoder on the zero-filled evidence, q_phi(z | x ⊙ m), mixed with the prior
(``defensive`` weight, Hesterberg 1995) so that the weights stay bounded where the encoder is
too narrow; any fitted Posterior with a density can be the proposal instead.
"""

from __future__ import annotations

import math

import torch

from condvae.conditioning.base import Posterior, Query
from condvae.conditioning.noise import reparameterize
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError


def _encoder_mixture_sample(
    query: Query, counter: int, n: int, defensive: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """z ~ (1 - a) q_phi(z | x ⊙ m) + a p(z), with log density, ``[n, B, d]`` and ``[n, B]``."""
    eps = query.noise(counter, n)
    from_prior = reparameterize(query.vae.prior, eps)
    if defensive >= 1:
        return from_prior, query.vae.prior.log_prob(from_prior)
    q = query.vae.encode(query.x)
    pick = torch.special.ndtr(query.noise(counter + (1 << 21), n)[..., 0]) < defensive
    z = torch.where(pick[..., None], from_prior, reparameterize(q, eps))
    log_prior = query.vae.prior.log_prob(z)
    log_q = q.log_prob(z) + math.log1p(-defensive)
    if defensive > 0:
        log_q = torch.logaddexp(log_q, log_prior + math.log(defensive))
    return z, log_q


@register("importance")
class Importance(Posterior):
    def __init__(
        self,
        query: Query,
        particles: int = 5000,
        proposal: str | Posterior = "encoder",
        defensive: float = 0.2,
    ) -> None:
        super().__init__(query)
        if not isinstance(particles, int) or particles < 1:
            raise CondVAEError(f"particles: expected a positive integer, got {particles!r}")
        if not 0 <= defensive <= 1:
            raise CondVAEError(f"defensive: expected a prior weight in [0, 1], got {defensive!r}")
        if isinstance(proposal, Posterior):
            if not proposal.has_density:
                raise CondVAEError(f"proposal: method {proposal.name!r} has no density to weight by")
            if proposal.query.batch != query.batch:
                raise CondVAEError("proposal: fitted on a different batch of queries")
        elif proposal not in ("encoder", "prior"):
            raise CondVAEError(
                f"proposal: expected 'encoder', 'prior' or a fitted Posterior, got {proposal!r}"
            )
        self.particles, self.proposal, self.defensive = particles, proposal, float(defensive)

    def run(self) -> None:
        z, log_r = self._propose(self.particles)
        self.z = z
        self.log_w = self.query.log_joint(z) - log_r  # [K, B]
        self.log_evidence = torch.logsumexp(self.log_w, 0) - math.log(self.particles)
        w_bar = torch.softmax(self.log_w, 0)
        self.ess = 1.0 / (w_bar**2).sum(0)
        self.diagnostics.update(
            particles=self.particles,
            effective_sample_size=self.ess,
            log_evidence=self.log_evidence,
            decoder_evaluations_per_query=self.particles,
        )

    def _propose(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.proposal, Posterior):
            return self.proposal.sample_and_log_prob(n)
        defensive = 1.0 if self.proposal == "prior" else self.defensive
        return _encoder_mixture_sample(self.query, -2, n, defensive)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """SIR: n draws from the particles with probabilities w_bar (with replacement)."""
        u = torch.special.ndtr(self.query.noise(self._next_counter(), n)[..., 0])  # [n, B]
        cdf = torch.cumsum(torch.softmax(self.log_w, 0), 0).T.contiguous()  # [B, K]
        index = torch.searchsorted(cdf, u.T.contiguous() * cdf[:, -1:]).clamp_max(self.particles - 1).T
        return torch.gather(self.z, 0, index[..., None].expand(-1, -1, self.z.shape[-1]))
