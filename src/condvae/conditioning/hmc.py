"""Hamiltonian Monte Carlo over z, in the parts of pyro.infer's ``ops/integrator`` and
``ops/dual_averaging``: ``leapfrog``, ``DualAveraging`` and the driver ``HMC.run``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query, decoded_bytes, reparameterize
from condvae.conditioning.monitor import tick
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError

MAX_ENERGY_ERROR = 1000.0  # nats: a larger (or NaN) energy error is a divergence, and rejected

Potential = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # z -> U(z), dU/dz


def leapfrog(
    potential: Potential, z: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, step: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``steps`` leapfrog steps for H(z, p) = U(z) + |p|^2 / 2 (Neal 2011, eqs. 5.18-5.20).

    ``grad`` is dU/dz at the start; returns the end point z, its momentum p, U(z) and dU/dz.
    """
    p = p - 0.5 * step * grad
    for i in range(steps):
        z = z + step * p
        u, grad = potential(z)
        if i < steps - 1:
            p = p - step * grad
    return z, p - 0.5 * step * grad, u, grad


class DualAveraging:
    """Per-query step-size adaptation (Hoffman & Gelman 2014, Algorithm 5).

        H_m = (1 - 1/(m + t0)) H_{m-1} + (delta - alpha_m) / (m + t0)
        log eps_m = mu - sqrt(m) / gamma * H_m,        mu = log(10 eps_0)
        log eps_bar_m = m^-kappa log eps_m + (1 - m^-kappa) log eps_bar_{m-1}

    alpha_m is the m-th acceptance probability, delta the target; eps_m is used during
    warm-up and eps_bar (``final``) afterwards. Both are rounded to a grid in log space: the
    feedback from eps to alpha and back amplifies any difference, and a model's kernels may
    round a query's gradient differently in different batches, so unrounded step sizes would
    turn that last-bit difference into a different chain.
    """

    GAMMA = 0.05  # how hard log eps is pulled towards mu
    T0 = 10.0  # damps the first, noisy iterations
    KAPPA = 0.75  # decay of the averaging weight
    GRID = 1 / 32  # log eps is rounded to multiples of this (steps of 3 %)

    def __init__(self, step_size: float, target: float, batch: int, device: torch.device) -> None:
        self.mu, self.target, self.m = math.log(10 * step_size), target, 0
        self.h = torch.zeros(batch, device=device)
        self.log_step = torch.full((batch,), math.log(step_size), device=device)
        self.log_step_bar = torch.zeros(batch, device=device)

    def update(self, accept_prob: torch.Tensor) -> None:
        """One iteration with the acceptance probability ``accept_prob`` [B]."""
        self.m += 1
        m, t0 = self.m, self.T0
        self.h = (1 - 1 / (m + t0)) * self.h + (self.target - accept_prob) / (m + t0)
        self.log_step = self.mu - math.sqrt(m) / self.GAMMA * self.h
        eta = m**-self.KAPPA
        self.log_step_bar = eta * self.log_step + (1 - eta) * self.log_step_bar

    def _rounded(self, log_step: torch.Tensor) -> torch.Tensor:
        return (torch.round(log_step / self.GRID) * self.GRID).exp()

    @property
    def step_size(self) -> torch.Tensor:
        return self._rounded(self.log_step) if self.m else self.log_step.exp()

    @property
    def final(self) -> torch.Tensor:
        """The averaged step size, ``[B]`` (the initial one if there was no adaptation)."""
        return self._rounded(self.log_step_bar) if self.m else self.log_step.exp()


@dataclasses.dataclass
class HMCDiagnostics(Diagnostics):
    step_size: torch.Tensor | None = None  # [B], the adapted step size of the draws
    acceptance_rate: torch.Tensor | None = None  # [B], mean acceptance probability of the draws
    divergences: torch.Tensor | None = None  # [B], divergent transitions among the draws


@register("hmc")
class HMC(Posterior):
    """Hamiltonian Monte Carlo with fixed-length trajectories and an identity mass matrix.

    Each transition draws a momentum p ~ N(0, I), runs ``leapfrog`` steps on
    H(z, p) = -log p(x_o, z) + |p|^2 / 2 and accepts with probability min(1, exp(-Delta H)).
    The step size, per query, is tuned during warm-up by dual averaging and jittered
    uniformly in [0.5, 1.5] times its value at each transition (a fixed trajectory length can
    resonate with the posterior's scale). ``sample(n)`` draws uniformly from the kept states.

    Arguments:
        chains: chains per query, started at prior draws.
        warmup: transitions that adapt the step size (discarded).
        draws: transitions kept per chain.
        leapfrog: leapfrog steps per transition.
        target_accept: the acceptance probability dual averaging aims for, in (0, 1).
        step_size: the initial step size.

    References:
        Neal, "MCMC using Hamiltonian dynamics", 2011, arXiv:1206.1901.
        Hoffman & Gelman, "The No-U-Turn Sampler: adaptively setting path lengths in
        Hamiltonian Monte Carlo", 2014, arXiv:1111.4246.
    """

    diagnostics_type = HMCDiagnostics
    diagnostics: HMCDiagnostics

    def __init__(
        self,
        query: Query,
        *,
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
        if not step_size > 0:
            raise CondVAEError(f"step_size: expected a positive step size, got {step_size!r}")
        self.chains, self.warmup, self.draws, self.leapfrog = chains, warmup, draws, leapfrog
        self.target_accept, self.step_size = target_accept, step_size

    def potential(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U(z) = -log p(x_o, z) and dU/dz."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p = self.query.log_joint(z)
            (grad,) = torch.autograd.grad(log_p.sum(), z)
        return -log_p.detach(), -grad

    def transition(
        self, z: torch.Tensor, u: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, t: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition t of every chain: z, U, dU/dz, acceptance probability, divergent."""
        q = self.query
        step = (step_size * (0.5 + q.stream("hmc/jitter").uniform(1, index=t)[0]))[None, :, None]
        p0 = q.stream("hmc/momentum").normal(self.chains, q.latent_dim, index=t)
        z1, p1, u1, g1 = leapfrog(self.potential, z, p0, grad, step, self.leapfrog)
        energy_change = (u1 + 0.5 * (p1**2).sum(-1)) - (u + 0.5 * (p0**2).sum(-1))
        divergent = ~torch.isfinite(energy_change) | (energy_change > MAX_ENERGY_ERROR)
        accept_prob = torch.where(divergent, 0.0, torch.exp(-energy_change).clamp(max=1.0))
        accept = q.stream("hmc/accept").uniform(self.chains, index=t) < accept_prob
        z = torch.where(accept[..., None], z1, z)
        grad = torch.where(accept[..., None], g1, grad)
        return z, torch.where(accept, u1, u), grad, accept_prob, divergent

    def fit_memory(self) -> tuple[str, float]:
        return "chains", decoded_bytes(self.query, self.chains)

    def run(self) -> None:
        q = self.query
        z = reparameterize(q.vae.prior, q.stream("hmc/init").normal(self.chains, q.latent_dim))
        u, grad = self.potential(z)
        adapt = DualAveraging(self.step_size, self.target_accept, q.batch, z.device)
        accept_sum = torch.zeros(q.batch, device=z.device)
        divergences = torch.zeros(q.batch, dtype=torch.long, device=z.device)
        bank = []
        for t in range(self.warmup + self.draws):
            tick(t + 1, self.warmup + self.draws, self.name)
            warm = t < self.warmup
            z, u, grad, accept_prob, divergent = self.transition(
                z, u, grad, adapt.step_size if warm else adapt.final, t
            )
            if warm:
                adapt.update(accept_prob.mean(0))
            else:
                bank.append(z)
                accept_sum += accept_prob.mean(0)
                divergences += divergent.sum(0)
        self.bank = torch.cat(bank, 0)  # [draws * chains, B, d]
        d = self.diagnostics
        d.step_size, d.acceptance_rate, d.divergences = adapt.final, accept_sum / self.draws, divergences
        d.decoder_evaluations_per_query = (self.warmup + self.draws) * self.leapfrog * self.chains

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n draws per query from the kept chain states (uniformly, with replacement)."""
        flat = torch.ones(self.query.batch, self.bank.shape[0], device=self.bank.device)
        index = self.query.stream("hmc/draw").categorical(flat, n, index=self.draw_index())
        return torch.gather(self.bank, 0, index[..., None].expand(-1, -1, self.bank.shape[-1]))
