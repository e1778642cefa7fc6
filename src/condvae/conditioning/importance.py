"""Self-normalised importance sampling and sampling-importance-resampling."""

from __future__ import annotations

import dataclasses
import math

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query, reparameterize
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError


@dataclasses.dataclass
class ImportanceDiagnostics(Diagnostics):
    particles: int = 0
    effective_sample_size: torch.Tensor | None = None  # [B], 1 / sum_k w_bar_k^2


@register("importance")
class Importance(Posterior):
    """Importance sampling with K particles per query, and resampling from them.

    z_k ~ r(z), w_k = p(x_o, z_k) / r(z_k), w_bar_k = w_k / sum_j w_j; then

        p(x_o) ≈ (1/K) sum_k w_k          (``log_evidence()``)

    and ``sample(n)`` draws particles with probabilities w_bar (SIR). The default proposal
    is the pretrained encoder on the zero-filled evidence mixed with the prior,
    r = (1 - a) q_phi(z | x ⊙ m) + a p(z), whose prior part keeps the weights bounded where
    the encoder is too narrow.

    Arguments:
        particles: K, particles per query.
        proposal: "encoder" (the defensive mixture above), "prior", or a fitted Posterior
            with a density (a cross-coder: nearly flat weights).
        defensive: the prior weight a of the "encoder" proposal, in [0, 1].

    References:
        Rubin, "Using the SIR algorithm to simulate posterior distributions", 1988.
        Hesterberg, "Weighted average importance sampling and defensive mixture
        distributions", 1995.
        Mattei & Frellsen, "MIWAE: Deep generative modelling and imputation of incomplete
        data sets", 2019, arXiv:1812.02633.
    """

    diagnostics_type = ImportanceDiagnostics
    diagnostics: ImportanceDiagnostics

    def __init__(
        self,
        query: Query,
        *,
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
        self.particles, self.proposal = particles, proposal
        self.defensive = 1.0 if proposal == "prior" else float(defensive)

    def run(self) -> None:
        if isinstance(self.proposal, Posterior):
            self.z, log_r = self.proposal.sample_and_log_prob(self.particles)
        else:
            self.z, log_r = self.propose(self.particles)
        self.log_w = self.query.log_joint(self.z) - log_r  # [K, B]
        d = self.diagnostics
        d.particles, d.decoder_evaluations_per_query = self.particles, self.particles
        self._log_evidence = torch.logsumexp(self.log_w, 0) - math.log(self.particles)
        self.ess = 1.0 / (torch.softmax(self.log_w, 0) ** 2).sum(0)  # effective sample size, [B]
        d.effective_sample_size = self.ess

    def propose(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ (1 - a) q_phi(z | x ⊙ m) + a p(z) and its log density, ``[n, B, d]`` and ``[n, B]``."""
        q, a = self.query, self.defensive
        eps = q.stream("importance/proposal").normal(n, q.latent_dim)
        from_prior = reparameterize(q.vae.prior, eps)
        if a >= 1:
            return from_prior, q.vae.prior.log_prob(from_prior)
        encoder = q.vae.encode(q.x)
        pick = q.stream("importance/defensive").uniform(n) < a
        z = torch.where(pick[..., None], from_prior, reparameterize(encoder, eps))
        log_r = encoder.log_prob(z) + math.log1p(-a)
        if a > 0:
            log_r = torch.logaddexp(log_r, q.vae.prior.log_prob(z) + math.log(a))
        return z, log_r

    def log_evidence(self) -> torch.Tensor:
        return self._log_evidence

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """SIR: n draws from the particles with probabilities w_bar (with replacement)."""
        weights = torch.softmax(self.log_w, 0).T  # [B, K]
        index = self.query.stream("importance/resample").categorical(weights, n, index=self.draw_index())
        return torch.gather(self.z, 0, index[..., None].expand(-1, -1, self.z.shape[-1]))
