"""Self-normalised importance sampling and sampling-importance-resampling."""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from torch.distributions import Distribution

from condvae.conditioning.base import Diagnostics, Posterior, Query, decoded_bytes, reparameterize
from condvae.conditioning.registry import register
from condvae.errors import ConditioningWarning, CondVAEError

# How many low-ESS queries the warning names before it says "and N more".
_NAMED = 5


@dataclasses.dataclass
class ImportanceDiagnostics(Diagnostics):
    particles: int = 0
    effective_sample_size: torch.Tensor | None = None  # [B], 1 / sum_k w_bar_k^2
    min_ess: float = 0.0  # the threshold below which a query was flagged
    low_ess: dict[int, float] = dataclasses.field(default_factory=dict)  # query index -> its ESS


@register("importance")
class Importance(Posterior):
    """Importance sampling with K particles per query, and resampling from them.

    z_k ~ r(z), w_k = p(x_o, z_k) / r(z_k), w_bar_k = w_k / sum_j w_j; then

        p(x_o) ≈ (1/K) sum_k w_k          (``log_evidence()``)

    and ``sample(n)`` draws particles with probabilities w_bar (SIR). The default proposal
    is the pretrained encoder on the zero-filled evidence mixed with the prior,
    r = (1 - a) q_phi(z | x ⊙ m) + a p(z), whose prior part keeps the weights bounded where
    the encoder is too narrow. A model with ``encode_partial(x, mask)`` (an encoder that
    reads the evidence and its mask natively) is asked for q_phi(z | x_o, m) instead.

    The effective sample size ESS = 1 / sum_k w_bar_k^2 (Kong, Liu & Wong 1994) says how
    many independent posterior draws the K weighted particles are worth. A query whose ESS
    falls below ``min_ess`` gets one ``ConditioningWarning`` after the fit (naming it), and
    its index and ESS go to ``diagnostics.low_ess``: its samples and evidence estimate rest
    on a handful of particles and can be badly off without looking so.

    Arguments:
        particles: K, particles per query.
        proposal: "encoder" (the defensive mixture above), "prior", or a fitted Posterior
            with a density (a cross-coder: nearly flat weights).
        defensive: the prior weight a of the "encoder" proposal, in [0, 1].
        min_ess: the effective sample size below which a query is flagged and warned about;
            None (the default) means max(10, K / 100), at most K; 0 turns the check off.

    References:
        Rubin, "Using the SIR algorithm to simulate posterior distributions", 1988.
        Hesterberg, "Weighted average importance sampling and defensive mixture
        distributions", 1995.
        Mattei & Frellsen, "MIWAE: Deep generative modelling and imputation of incomplete
        data sets", 2019, arXiv:1812.02633.
        Kong, Liu & Wong, "Sequential imputations and Bayesian missing data problems", 1994
        (the effective sample size).
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
        min_ess: float | None = None,
    ) -> None:
        super().__init__(query)
        if not isinstance(particles, int) or particles < 1:
            raise CondVAEError(f"particles: expected a positive integer, got {particles!r}")
        if min_ess is not None and (
            isinstance(min_ess, bool) or not isinstance(min_ess, int | float) or not 0 <= min_ess
        ):
            raise CondVAEError(
                f"min_ess: expected a non-negative effective sample size or None, got {min_ess!r}"
            )
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
        # 1% of the particles: a proposal worth less than that is a poor match to the posterior;
        # never below 10, fewer draws than that cannot describe a posterior at all.
        self.min_ess = float(min(particles, max(10.0, particles / 100)) if min_ess is None else min_ess)

    def fit_memory(self) -> tuple[str, float]:
        return "particles", decoded_bytes(self.query, self.particles)

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
        d.effective_sample_size, d.min_ess = self.ess, self.min_ess
        low = (self.ess < self.min_ess).nonzero().flatten().tolist()
        d.low_ess = {i: float(self.ess[i]) for i in low}
        if low:
            named = ", ".join(f"{i} (ESS {self.ess[i]:.3g})" for i in low[:_NAMED])
            more = f" and {len(low) - _NAMED} more" if len(low) > _NAMED else ""
            flagged = f"{len(low)} quer{'y' if len(low) == 1 else 'ies'} with ESS below {self.min_ess:g}"
            d.note = "; ".join(filter(None, [d.note, flagged]))
            # stacklevel 4: run <- Posterior.fit <- condition <- the caller's line.
            warnings.warn(
                f"{self.name}: effective sample size below {self.min_ess:g} of {self.particles} particles "
                f"for quer{'y' if len(low) == 1 else 'ies'} {named}{more}: their samples and log_evidence "
                "rest on a few particles and may be far off; raise particles, pass a fitted proposal "
                "(proposal=condition(vae, x, mask, method='gvi')) or use another method (hmc, gvi, planar)",
                ConditioningWarning,
                stacklevel=4,
            )

    def propose(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ (1 - a) q_phi(z | x ⊙ m) + a p(z) and its log density, ``[n, B, d]`` and ``[n, B]``."""
        q, a = self.query, self.defensive
        eps = q.stream("importance/proposal").normal(n, q.latent_dim)
        from_prior = reparameterize(q.vae.prior, eps)
        if a >= 1:
            return from_prior, q.vae.prior.log_prob(from_prior)
        encoder = self.encoder()
        pick = q.stream("importance/defensive").uniform(n) < a
        z = torch.where(pick[..., None], from_prior, reparameterize(encoder, eps))
        log_r = encoder.log_prob(z) + math.log1p(-a)
        if a > 0:
            log_r = torch.logaddexp(log_r, q.vae.prior.log_prob(z) + math.log(a))
        return z, log_r

    def encoder(self) -> Distribution:
        """q_phi(z | x_o): ``encode_partial(x, mask)`` where the model has it, else ``encode(x ⊙ m)``."""
        q = self.query
        # Unobserved values are zeroed so that a NaN there (allowed for unknowns) never meets
        # arithmetic, even in an encoder that multiplies x by the mask itself.
        x = torch.where(q.mask, q.x, torch.zeros_like(q.x))
        encode_partial = getattr(q.vae, "encode_partial", None)
        if callable(encode_partial):
            return encode_partial(x, q.mask)
        return q.vae.encode(x)

    def log_evidence(self) -> torch.Tensor:
        return self._log_evidence

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """SIR: n draws from the particles with probabilities w_bar (with replacement)."""
        weights = torch.softmax(self.log_w, 0).T  # [B, K]
        index = self.query.stream("importance/resample").categorical(weights, n, index=self.draw_index())
        return torch.gather(self.z, 0, index[..., None].expand(-1, -1, self.z.shape[-1]))
