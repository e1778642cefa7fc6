"""Hamiltonian Monte Carlo over z targeting log p(x_o, z) (Neal 2011; paper 001's baseline).

Fixed-length leapfrog trajectories, identity mass matrix, every chain of every query advanced
at once (z is ``[chains, B, d]``). Each query has its own step size, tuned during warm-up by
dual averaging towards a target acceptance rate (Hoffman & Gelman 2014, Algorithm 5, with
the acceptance averaged over that query's chains). A transition whose energy error exceeds
1000 nats (or is NaN) counts as a divergence and is rejected. The step size is jittered
uniformly in [0.5, 1.5] times its value at each transition against periodic trajectories.
"""

from __future__ import annotations

import math

import torch

from condvae.conditioning.base import Posterior, Query
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError


def _potential_and_grad(query: Query, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_p = query.log_joint(z)
        (grad,) = torch.autograd.grad(log_p.sum(), z)
    return -log_p.detach(), -grad


@register("hmc")
class HMC(Posterior):
    def __init__(
        self,
        query: Query,
        chains: int = 4,
        warmup: int = 500,
        draws: int = 250,
        leapfrog: int = 10,
        target_accept: float = 0.8,
        step_size: float = 0.1,
    ) -> None:
        super().__init__(query)
        for name, value in (("chains", chains), ("warmup", warmup), ("draws", draws), ("leapfrog", leapfrog)):
            if not isinstance(value, int) or value < (0 if name == "warmup" else 1):
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
        if not 0 < target_accept < 1:
            raise CondVAEError(f"target_accept: expected a value in (0, 1), got {target_accept!r}")
        self.chains, self.warmup, self.draws, self.leapfrog = chains, warmup, draws, leapfrog
        self.target_accept, self.step_size0 = target_accept, step_size

    def _transition(
        self, z: torch.Tensor, u: torch.Tensor, grad: torch.Tensor, eps: torch.Tensor, counter: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One HMC step for all chains; returns z, U, grad, acceptance prob, divergent."""
        q = self.query
        # Jitter the step size in [0.5, 1.5] x eps per transition: a fixed trajectory length
        # can resonate with the posterior's scale and stop a chain from mixing (Neal 2011, 5.4.2).
        jitter = 0.5 + torch.special.ndtr(q.noise(counter + (1 << 23), 1)[0, :, 0])
        step = (eps * jitter)[None, :, None]  # per query
        p0 = q.noise(counter, self.chains)
        z1, g1 = z, grad
        p1 = p0 - 0.5 * step * g1
        for i in range(self.leapfrog):
            z1 = z1 + step * p1
            u1, g1 = _potential_and_grad(q, z1)
            if i < self.leapfrog - 1:
                p1 = p1 - step * g1
        p1 = p1 - 0.5 * step * g1
        energy_change = (u1 + 0.5 * (p1**2).sum(-1)) - (u + 0.5 * (p0**2).sum(-1))
        divergent = ~torch.isfinite(energy_change) | (energy_change > 1000.0)
        accept_prob = torch.where(
            divergent, torch.zeros_like(energy_change), torch.exp(-energy_change).clamp(max=1.0)
        )
        uniform = torch.special.ndtr(q.noise(counter + (1 << 22), self.chains)[..., 0])
        accept = uniform < accept_prob
        z = torch.where(accept[..., None], z1, z)
        u = torch.where(accept, u1, u)
        grad = torch.where(accept[..., None], g1, grad)
        return z, u, grad, accept_prob, divergent

    def run(self) -> None:
        q = self.query
        z = q.noise(-4, self.chains)  # start every chain at a prior draw
        u, grad = _potential_and_grad(q, z)
        b = q.batch
        device = z.device
        log_eps = torch.full((b,), math.log(self.step_size0), device=device)
        mu = math.log(10 * self.step_size0)
        h_bar = torch.zeros(b, device=device)
        log_eps_bar = torch.zeros(b, device=device)
        gamma, t0, kappa = 0.05, 10.0, 0.75
        divergences = torch.zeros(b, dtype=torch.long, device=device)
        accept_sum = torch.zeros(b, device=device)
        bank = []
        for t in range(self.warmup + self.draws):
            warm = t < self.warmup
            eps = log_eps.exp() if warm else log_eps_bar.exp()
            z, u, grad, accept_prob, divergent = self._transition(z, u, grad, eps, t)
            alpha = accept_prob.mean(0)
            if warm:
                m = t + 1
                h_bar = (1 - 1 / (m + t0)) * h_bar + (self.target_accept - alpha) / (m + t0)
                log_eps = mu - math.sqrt(m) / gamma * h_bar
                eta = m**-kappa
                log_eps_bar = eta * log_eps + (1 - eta) * log_eps_bar
            else:
                bank.append(z)
                accept_sum += alpha
                divergences += divergent.sum(0)
        if self.warmup == 0:
            log_eps_bar = log_eps
        self.bank = torch.cat(bank, 0)  # [draws * chains, B, d]
        self.diagnostics.update(
            step_size=log_eps_bar.exp(),
            acceptance_rate=accept_sum / self.draws,
            divergences=divergences,
            decoder_evaluations_per_query=(self.warmup + self.draws) * self.leapfrog * self.chains,
        )

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n draws per query from the kept chain states (uniformly, with replacement)."""
        u = torch.special.ndtr(self.query.noise(self._next_counter(), n)[..., 0])
        index = (u * self.bank.shape[0]).long().clamp_max(self.bank.shape[0] - 1)
        return torch.gather(self.bank, 0, index[..., None].expand(-1, -1, self.bank.shape[-1]))
