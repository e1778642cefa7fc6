"""Exact rejection sampling from p(z | x_o) with the prior as proposal."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query, decoded_bytes, reparameterize
from condvae.conditioning.monitor import tick
from condvae.conditioning.registry import register
from condvae.conditioning.variational import frozen
from condvae.errors import CondVAEError

# One-sided confidence of the pilot's bounds on each acceptance rate: z = 3 (99.9%), so a
# reachable request is refused, or a hopeless one let through to sample(), about once in 700.
_Z = 3.0
_PILOT_FIRST = 1024  # proposals per query in the pilot's first round; later rounds double
# Expected accepts below which the pilot's rate is reported as its upper bound only: with few
# accepts the mean of p(x_o | z) / M is dominated by the best proposal seen and far too low.
_MEASURED = 10


def wilson_bounds(rate: torch.Tensor, n: int, z: float = _Z) -> tuple[torch.Tensor, torch.Tensor]:
    """Wilson score interval (lower, upper) for a success rate estimated from n trials.

    p_± = (p + z^2 / 2n ± z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n); with p = 0 the
    upper bound is z^2 / (n + z^2) (close to the "rule of three" 3 / n for z = sqrt(3)).
    Wilson, "Probable inference, the law of succession, and statistical inference", 1927.
    """
    centre = rate + z**2 / (2 * n)
    spread = z * torch.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2))
    shrink = 1 + z**2 / n
    return ((centre - spread) / shrink).clamp_min(0), ((centre + spread) / shrink).clamp_max(1)


def _sci(log_value: float) -> str:
    """exp(log_value) in two significant digits, also far beyond float range: 3.2e-120."""
    exponent = math.floor(log_value / math.log(10))
    mantissa = math.exp(log_value - exponent * math.log(10))
    if mantissa >= 9.95:  # rounding carried into the next power of ten
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2g}e{exponent:+03d}"


def _duration(log_seconds: float) -> str:
    """A rough human duration from its log: 40 s, 12 min, 3.1 h, 5.2 days, 3e+40 years."""
    for unit, seconds in (("years", 365.25 * 86400), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if log_seconds >= math.log(seconds):
            value = log_seconds - math.log(seconds)
            return f"{_plain(value)} {unit}" if value < math.log(1e4) else f"{_sci(value)} {unit}"
    return f"{_plain(log_seconds)} s"


def _plain(log_value: float) -> str:
    """exp(log_value) below 10^4 as people write it: 0.31, 4.2, 37, 2100."""
    value = math.exp(log_value)
    return f"{value:.2g}" if value < 100 else f"{round(value, -1):.0f}"


BOUND_STARTS, BOUND_STEPS = 16, 200  # the bound's search: Adam from 16 prior draws, 200 steps


def likelihood_bound(
    query: Query, starts: int = BOUND_STARTS, steps: int = BOUND_STEPS, lr: float = 0.05
) -> torch.Tensor:
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
    pilot_proposals: int = 0  # per query, in the fit-time pilot
    pilot_acceptance_rate: torch.Tensor | None = None  # [B], estimated by the pilot
    pilot_rate_bounds: torch.Tensor | None = None  # [B, 2], its lower and upper confidence bounds


@register("rejection")
class Rejection(Posterior):
    """Rejection sampling: exact draws from p(z | x_o), practical in low dimension only.

    z ~ p(z) is accepted with probability p(x_o | z) / M, M >= sup_z p(x_o | z), so the
    acceptance rate estimates p(x_o) / M:

        log p(x_o) ≈ log(accepted / proposed) + log M          (``log_evidence()``)

    M is found by maximising log p(x_o | z) with Adam from several starts. Should a proposal
    ever exceed it, M is raised and that query's draws restart, so the output stays exact.
    The acceptance rate falls fast with the latent size and the amount of evidence.

    So that a hopeless request fails at fit time and not after the whole budget is spent,
    ``condition`` runs a pilot of prior proposals per query (rounds of 1024, doubling; in
    all at most max(4096, budget / 10) and never more than the budget) and estimates each
    acceptance rate a = p(x_o) / M by the mean of p(x_o | z) / M over the pilot (the
    expected number of accepts, steadier than counting them), with Wilson bounds at z = 3.
    If some query's upper bound gives ``budget * a < samples``, it raises, naming the query,
    its rate, the proposals it would need and the time they would take at the measured
    throughput. The pilot stops as soon as every query is settled either way; the rates go
    to ``diagnostics.pilot_acceptance_rate`` and ``sample()`` keeps its own budget check.

    Arguments:
        budget: the most proposals per query in one ``sample()`` call before giving up.
        round_size: proposals per query per vectorised round (default: sized to memory).
        samples: the draws per query you plan to ask of one ``sample()`` call: the fit
            refuses when the budget cannot deliver them; None skips the pilot.

    References:
        Wu, Domke & Sanner, "Conditional Inference in Pre-trained Variational Autoencoders
        via Cross-coding", 2018, arXiv:1805.07785 (the rejection-sampling baseline).
        Wilson, "Probable inference, the law of succession, and statistical inference",
        1927 (the score interval of the pilot's acceptance rates).
    """

    exact = True
    diagnostics_type = RejectionDiagnostics
    diagnostics: RejectionDiagnostics

    def __init__(
        self,
        query: Query,
        *,
        budget: int = 1_000_000,
        round_size: int | None = None,
        samples: int | None = 1000,
    ) -> None:
        super().__init__(query)
        if not isinstance(budget, int) or budget < 1:
            raise CondVAEError(f"budget: expected a positive number of proposals per query, got {budget!r}")
        if round_size is not None and (not isinstance(round_size, int) or round_size < 1):
            raise CondVAEError(f"round_size: expected a positive integer, got {round_size!r}")
        if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
            raise CondVAEError(
                f"samples: expected a positive number of draws per query or None, got {samples!r}"
            )
        self.budget, self.samples = budget, samples
        per_round = 2**23 // max(1, query.batch * max(1, int(query.mask.flatten(1).sum(1).max())))
        self.round_size = round_size or int(min(budget, max(256, per_round)))
        self.rate = torch.full((query.batch,), torch.nan, device=query.x.device)  # of the last call

    def fit_memory(self) -> tuple[str, float]:
        return "round_size", decoded_bytes(self.query, self.round_size)

    def run(self) -> None:
        with torch.enable_grad():
            self.log_bound = likelihood_bound(self.query)
        self.diagnostics.log_bound = self.log_bound
        if self.samples is not None:
            self.pilot(self.samples)
        # the fit's own: the bound's search and the pilot; sample() adds its proposals
        d = self.diagnostics
        d.decoder_evaluations_per_query = BOUND_STARTS * (BOUND_STEPS + 1) + d.pilot_proposals

    @torch.no_grad()
    def pilot(self, samples: int) -> None:
        """Refuse, in one line, when some query cannot give ``samples`` draws within the budget.

        Rounds of prior proposals (their own stream, so ``sample()`` draws are unchanged)
        until every query's Wilson bounds put budget * rate clearly above or below
        ``samples``, or the pilot's cap is reached.
        """
        q, d = self.query, self.diagnostics
        cap = min(self.budget, max(4 * _PILOT_FIRST, self.budget // 10))
        need = samples / self.budget  # the acceptance rate the request needs
        # log sum_k p(x_o | z_k) in float64: a hopeless query's rate (e^-300, say) must still
        # come out as a number for the message, not underflow to 0.
        log_total = torch.full((q.batch,), -math.inf, dtype=torch.float64, device=q.x.device)
        log_peak = self.log_bound.double()
        n, start = 0, time.perf_counter()
        for round_ in itertools.count():
            size = min(_PILOT_FIRST * 2**round_, self.round_size, cap - n)
            eps = q.stream("rejection/pilot").normal(size, q.latent_dim, index=round_)
            log_lik = q.vae.log_likelihood(q.x, reparameterize(q.vae.prior, eps), q.mask, q.prepared).double()
            log_total = torch.logaddexp(log_total, torch.logsumexp(log_lik, 0))
            # Rates against max(M, what the pilot saw), so they stay in [0, 1]. self.log_bound is
            # left alone: sample() raises it when it must, and its draws may not depend on how
            # long the pilot ran (that depends on the batch mates).
            log_peak = torch.maximum(log_peak, log_lik.max(0).values)
            n += size
            log_rate = log_total - math.log(n) - log_peak
            lower, upper = wilson_bounds(log_rate.exp(), n)
            if bool((upper < need).any()) or bool((lower >= need).all()) or n >= cap:
                break
        seconds = time.perf_counter() - start
        d.pilot_proposals, d.pilot_acceptance_rate = n, log_rate.exp().float()
        d.pilot_rate_bounds = torch.stack([lower, upper], -1).float()
        hopeless = (upper < need).nonzero().flatten()
        if not len(hopeless):
            return
        i = int(hopeless[torch.argmin(upper[hopeless])])
        per_second = n / max(seconds, 1e-9)  # proposals per query per second (the batch runs at once)
        accepts = n * float(log_rate[i].exp())  # the pilot's expected number of accepts
        if accepts >= _MEASURED:
            about, log_rate_i = "about", float(log_rate[i])
            rate = f"its acceptance rate is about {_sci(log_rate_i)} ({accepts:.0f} accepts expected in {n})"
        else:  # too few accepts to measure: the point estimate would be far too low, give the bound
            about, log_rate_i = "more than", math.log(float(upper[i]))
            expected = f"{accepts:.2g}" if accepts >= 0.01 else "< 0.01"
            rate = (
                f"{n} pilot proposals expect {expected} accepts, so its rate is below {float(upper[i]):.2g}"
            )
        log_proposals = math.log(samples) - log_rate_i
        time_needed = _duration(log_proposals - math.log(per_second))
        more = len(hopeless) - 1
        others = f" (and {more} more quer{'y' if more == 1 else 'ies'})" if more else ""
        raise CondVAEError(
            f"budget: rejection cannot give query {i}{others} samples={samples} draws within budget="
            f"{self.budget} proposals: {rate}; it needs {about} {_sci(log_proposals)} proposals, {about} "
            f"{time_needed} at the measured {per_second:.3g} proposals/s; "
            "use importance with a fitted proposal, hmc or a cross-coder (gvi, planar), or lower samples"
        )

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
            tick(int(proposed.max()), self.budget, self.name)
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
