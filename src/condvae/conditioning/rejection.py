"""Exact rejection sampling from p(z | x_o) with the prior as proposal."""

from __future__ import annotations

import dataclasses
import itertools

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query, reparameterize
from condvae.conditioning.registry import register
from condvae.conditioning.variational import frozen
from condvae.errors import CondVAEError


def likelihood_bound(query: Query, starts: int = 16, steps: int = 200, lr: float = 0.05) -> torch.Tensor:
    """max_z log p(x_o | z) by Adam from ``starts`` prior draws per query, ``[B]``."""
    eps = query.stream("rejection/starts").normal(starts, query.latent_dim)
    z = reparameterize(query.vae.prior, eps).detach().requires_grad_(True)
    optim = torch.optim.Adam([z], lr=lr)
    with frozen(query.vae):
        for _ in range(steps):
            optim.zero_grad(set_to_none=True)
            (-query.vae.log_likelihood(query.x, z, query.mask, query.prepared).sum()).backward()
            optim.step()
        with torch.no_grad():
            best = query.vae.log_likelihood(query.x, z, query.mask, query.prepared).max(0).values
    if query.vae.likelihood.name == "bernoulli":  # p(x_o | z) <= 1 always: log M need not exceed 0
        best = best.clamp_max(0.0)
    return best.detach()


@dataclasses.dataclass
class RejectionDiagnostics(Diagnostics):
    log_bound: torch.Tensor | None = None  # [B], log M
    proposals: int = 0  # over all queries and sample() calls
    bound_raised: int = 0  # times a proposal exceeded M (that query's draws restarted)
    acceptance_rate: torch.Tensor | None = None  # [B], of the last sample() call


@register("rejection")
class Rejection(Posterior):
    """Rejection sampling: exact draws from p(z | x_o), practical in low dimension only.

    z ~ p(z) is accepted with probability p(x_o | z) / M, M >= sup_z p(x_o | z), so the
    acceptance rate estimates p(x_o) / M:

        log p(x_o) ≈ log(accepted / proposed) + log M          (``log_evidence()``)

    M is found by maximising log p(x_o | z) with Adam from several starts. Should a proposal
    ever exceed it, M is raised and that query's draws restart, so the output stays exact.
    The acceptance rate falls fast with the latent size and the amount of evidence.

    Arguments:
        budget: the most proposals per query in one ``sample()`` call before giving up.
        round_size: proposals per query per vectorised round (default: sized to memory).

    References:
        Wu, Domke & Sanner, "Conditional Inference in Pre-trained Variational Autoencoders
        via Cross-coding", 2018, arXiv:1805.07785 (the rejection-sampling baseline).
    """

    exact = True
    diagnostics_type = RejectionDiagnostics
    diagnostics: RejectionDiagnostics

    def __init__(self, query: Query, *, budget: int = 1_000_000, round_size: int | None = None) -> None:
        super().__init__(query)
        if not isinstance(budget, int) or budget < 1:
            raise CondVAEError(f"budget: expected a positive number of proposals per query, got {budget!r}")
        if round_size is not None and (not isinstance(round_size, int) or round_size < 1):
            raise CondVAEError(f"round_size: expected a positive integer, got {round_size!r}")
        self.budget = budget
        per_round = 2**23 // max(1, query.batch * max(1, int(query.mask.flatten(1).sum(1).max())))
        self.round_size = round_size or int(min(budget, max(256, per_round)))
        self.rate = torch.full((query.batch,), torch.nan, device=query.x.device)  # of the last call

    def run(self) -> None:
        with torch.enable_grad():
            self.log_bound = likelihood_bound(self.query)
        self.diagnostics.log_bound = self.log_bound

    def log_evidence(self) -> torch.Tensor:
        """From the acceptance rate of the last ``sample()`` call (1000 draws if none yet)."""
        if not self.diagnostics.proposals:
            self.sample(1000)
        return self.rate.log() + self.log_bound

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        q, draw = self.query, self.draw_index()
        device = q.x.device
        out = torch.zeros(n, q.batch, q.latent_dim, device=device)
        have, proposed, accepted = (torch.zeros(q.batch, dtype=torch.long, device=device) for _ in range(3))
        for round_ in itertools.count():
            if not bool((have < n).any()):
                break
            if int(proposed.max()) >= self.budget:
                worst = int(torch.argmin(have))
                rate = float(have[worst]) / max(1, int(proposed[worst]))
                raise CondVAEError(
                    f"rejection: query {worst} accepted {int(have[worst])} of {n} samples in "
                    f"{self.budget} proposals (acceptance rate {rate:.2g}); raise budget or use "
                    "another method (importance, hmc, a cross-coder)"
                )
            eps = q.stream("rejection/proposal").normal(self.round_size, q.latent_dim, index=(draw, round_))
            z = reparameterize(q.vae.prior, eps)
            log_lik = q.vae.log_likelihood(q.x, z, q.mask, q.prepared)  # [r, B]
            over = log_lik.max(0).values > self.log_bound
            if bool(over.any()):  # the bound was too low: raise it, restart those queries
                self.log_bound = torch.maximum(self.log_bound, log_lik.max(0).values)
                have = torch.where(over, torch.zeros_like(have), have)
                self.diagnostics.bound_raised += int(over.sum())
            u = q.stream("rejection/accept").uniform(self.round_size, index=(draw, round_))
            active = have < n
            hit = u.log() < log_lik - self.log_bound
            accept = hit & active
            rank = have + torch.cumsum(accept.long(), 0) - 1  # slot of each accepted draw
            keep = accept & (rank < n)
            out[rank[keep], keep.nonzero()[:, 1]] = z[keep]
            have = torch.clamp(have + accept.sum(0), max=n)
            proposed += self.round_size * active
            accepted += hit.sum(0) * active
        self.rate = accepted.float() / proposed.float()
        d = self.diagnostics
        d.proposals, d.acceptance_rate, d.log_bound = (
            d.proposals + int(proposed.sum()),
            self.rate,
            self.log_bound,
        )
        return out
