"""Exact rejection sampling from p(z | x_o) with the prior as proposal (paper 001, §4.2).

z ~ p(z) is accepted with probability p(x_o | z) / M, M >= sup_z p(x_o | z); accepted draws
are exact posterior samples and the acceptance rate estimates p(x_o) / M. M is found by
maximising log p(x_o | z) with Adam from several starts (capped at 1 for a Bernoulli
likelihood, where p(x_o | z) <= 1 always). Should a proposal ever exceed the bound, M is raised
to it and that query's draws restart, so the output stays exact. Practical in low dimension
only: the acceptance rate falls fast with the latent size and the amount of evidence.
"""

from __future__ import annotations

import torch

from condvae.conditioning.base import Posterior, Query
from condvae.conditioning.noise import reparameterize
from condvae.conditioning.registry import register
from condvae.conditioning.variational import frozen
from condvae.errors import CondVAEError


def likelihood_bound(query: Query, starts: int = 16, steps: int = 200, lr: float = 0.05) -> torch.Tensor:
    """max_z log p(x_o | z) by Adam from ``starts`` prior draws per query, ``[B]``."""
    z = query.noise(-3, starts).clone().requires_grad_(True)
    optim = torch.optim.Adam([z], lr=lr)
    with frozen(query.vae):
        for _ in range(steps):
            optim.zero_grad(set_to_none=True)
            (-query.vae.log_likelihood(query.x, z, query.mask, query.prepared).sum()).backward()
            optim.step()
        with torch.no_grad():
            best = query.vae.log_likelihood(query.x, z, query.mask, query.prepared).max(0).values
    if query.vae.likelihood.name == "bernoulli":
        best = best.clamp_max(0.0)
    return best.detach()


@register("rejection")
class Rejection(Posterior):
    exact = True

    def __init__(self, query: Query, budget: int = 1_000_000, round_size: int | None = None) -> None:
        super().__init__(query)
        if not isinstance(budget, int) or budget < 1:
            raise CondVAEError(f"budget: expected a positive number of proposals per query, got {budget!r}")
        self.budget = budget
        per_round = 2**23 // max(1, query.batch * max(1, int(query.mask.flatten(1).sum(1).max())))
        self.round_size = round_size or int(min(budget, max(256, per_round)))

    def run(self) -> None:
        with torch.enable_grad():
            self.log_bound = likelihood_bound(self.query)
        self.diagnostics.update(log_bound=self.log_bound, proposals=0, bound_raised=0)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        q = self.query
        b, d = q.batch, q.latent_dim
        out = torch.zeros(n, b, d, device=q.x.device)
        have = torch.zeros(b, dtype=torch.long, device=q.x.device)
        proposed = torch.zeros(b, dtype=torch.long, device=q.x.device)
        accepted = torch.zeros(b, dtype=torch.long, device=q.x.device)
        counter = self._next_counter() << 16
        while bool((have < n).any()):
            if int(proposed.max()) >= self.budget:
                worst = int(torch.argmin(have))
                rate = float(have[worst]) / max(1, int(proposed[worst]))
                raise CondVAEError(
                    f"rejection: query {worst} accepted {int(have[worst])} of {n} samples in "
                    f"{self.budget} proposals (acceptance rate {rate:.2g}); raise budget or use "
                    "another method (importance, hmc, a cross-coder)"
                )
            counter += 1
            z = reparameterize(q.vae.prior, q.noise(counter, self.round_size))
            log_lik = q.vae.log_likelihood(q.x, z, q.mask, q.prepared)  # [r, B]
            over = log_lik.max(0).values > self.log_bound
            if bool(over.any()):  # the bound was too low: raise it, restart those queries
                self.log_bound = torch.maximum(self.log_bound, log_lik.max(0).values)
                have = torch.where(over, torch.zeros_like(have), have)
                self.diagnostics["bound_raised"] += int(over.sum())
            log_u = torch.log(torch.special.ndtr(q.noise(counter + (1 << 15), self.round_size)[..., 0]))
            active = have < n
            hit = log_u < log_lik - self.log_bound
            accept = hit & active
            rank = have + torch.cumsum(accept.long(), 0) - 1  # slot of each accepted draw
            keep = accept & (rank < n)
            slot, query_index = rank[keep], keep.nonzero()[:, 1]
            out[slot, query_index] = z[keep]
            have = torch.clamp(have + accept.sum(0), max=n)
            proposed += self.round_size * active
            accepted += hit.sum(0) * active
        total = int(self.diagnostics["proposals"]) + int(proposed.sum())
        rate = accepted.float() / proposed.float()
        self.diagnostics.update(proposals=total, acceptance_rate=rate)
        # The acceptance probability is p(x_o) / M: an unbiased estimate of the evidence.
        self.diagnostics["log_evidence_estimate"] = rate.log() + self.log_bound
        return out
