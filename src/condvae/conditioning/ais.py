"""Annealed importance sampling with HMC moves, resampled as an SMC sampler: a gold standard.

The sampler walks K particles per query along the geometric path from the prior to the
posterior, f_t(z) = p(z) p(x_o | z)^beta_t with 0 = beta_0 < ... < beta_T = 1, and carries
their importance weights; ``anneal`` is the walk, shared by the forward sampler (``ais``) and
the reverse chains of bidirectional Monte Carlo (``condvae.conditioning.bdmc``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query, decoded_bytes, reparameterize
from condvae.conditioning.hmc import MAX_ENERGY_ERROR, Potential, leapfrog
from condvae.conditioning.monitor import tick
from condvae.conditioning.registry import register
from condvae.conditioning.variational import frozen
from condvae.errors import CondVAEError
from condvae.models import VAE

_GRID = 1 / 32  # log step sizes are rounded to this grid (see DualAveraging: batch independence)


def sigmoid_schedule(temperatures: int, sharpness: float = 4.0) -> torch.Tensor:
    """beta_0 = 0 < ... < beta_T = 1, dense near both ends: sigma(delta (2t/T - 1)) rescaled to
    [0, 1] (Grosse, Ghahramani & Adams 2015, section 6), ``[T + 1]`` in float64."""
    t = torch.linspace(-sharpness, sharpness, temperatures + 1, dtype=torch.float64)
    s = torch.sigmoid(t)
    return (s - s[0]) / (s[-1] - s[0])


@dataclasses.dataclass
class Walk:
    """The end of an annealing walk: particles z [K, B, d], their log weights [K, B], the log
    normaliser accumulated at resampling [B], and what the walk saw."""

    z: torch.Tensor
    log_w: torch.Tensor
    log_z: torch.Tensor
    log_lik: torch.Tensor
    step_size: torch.Tensor
    acceptance_rate: torch.Tensor
    resamplings: torch.Tensor


def _potential(query: Query, beta: float) -> tuple[Potential, dict[str, torch.Tensor]]:
    """z -> (U, dU/dz) for U = -log p(z) - beta log p(x_o | z); keeps log p(x_o | z) of the last call."""
    last: dict[str, torch.Tensor] = {}

    def potential(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_lik = query.vae.log_likelihood(query.x, z, query.mask, query.prepared)
            log_f = query.vae.prior.log_prob(z) + beta * log_lik
            (grad,) = torch.autograd.grad(log_f.sum(), z)
        last["log_lik"] = log_lik.detach()
        return -log_f.detach(), -grad

    return potential, last


def anneal(
    query: Query,
    z: torch.Tensor,
    betas: torch.Tensor,
    *,
    leapfrog_steps: int,
    step_size: float,
    target_accept: float,
    resample: float,
    stream: str,
) -> Walk:
    """Walk particles ``z`` [K, B, d], distributed as f_{betas[0]}, along ``betas``.

    At each temperature: log w += (beta_t - beta_{t-1}) log p(x_o | z); then, where a query's
    effective sample size is below ``resample`` * K, systematic resampling (the mean weight
    goes into ``log_z``); then one HMC transition that leaves f_t invariant. Each query's step
    size is scaled by exp(acceptance - target) after every transition, so it follows the
    posterior's scale as it narrows (Wu, Burda, Salakhutdinov & Grosse 2017 adapt theirs by
    the same feedback).
    """
    k, b, d = z.shape
    device = z.device
    log_w = torch.zeros(k, b, device=device)
    log_z = torch.zeros(b, device=device)
    log_step = torch.full((b,), math.log(step_size), device=device)
    accept_sum = torch.zeros(b, device=device)
    resamplings = torch.zeros(b, dtype=torch.long, device=device)
    potential, last = _potential(query, float(betas[0]))
    u, grad = potential(z)
    log_lik = last["log_lik"]
    for t in range(1, len(betas)):
        tick(t, len(betas) - 1, stream)
        beta, delta = float(betas[t]), float(betas[t] - betas[t - 1])
        log_w = log_w + delta * log_lik
        if resample > 0:
            ess = 1.0 / (torch.softmax(log_w, 0) ** 2).sum(0)
            low = ess < resample * k
            # Resampling is a no-op for queries not low, so the host need not ask whether any
            # is: on the CPU asking is free and skips the work; on a GPU it would stall the
            # queue once per temperature, so there every temperature resamples the low ones.
            if device.type != "cpu" or bool(low.any()):
                log_mean = torch.logsumexp(log_w, 0) - math.log(k)
                index = _systematic(query, log_w, f"{stream}/resample", t)
                pick = torch.where(low[None], index, torch.arange(k, device=device)[:, None])
                z = torch.gather(z, 0, pick[..., None].expand(-1, -1, d))
                log_lik = torch.gather(log_lik, 0, pick)
                log_z = torch.where(low, log_z + log_mean, log_z)
                log_w = torch.where(low[None], torch.zeros_like(log_w), log_w)
                resamplings += low
        potential, last = _potential(query, beta)
        u, grad = potential(z)  # at the new temperature
        step = (torch.round(log_step / _GRID) * _GRID).exp()[None, :, None]
        p0 = query.stream(f"{stream}/momentum").normal(k, d, index=t)
        z1, p1, u1, _ = leapfrog(potential, z, p0, grad, step, leapfrog_steps)
        log_lik1 = last["log_lik"]
        energy_change = (u1 + 0.5 * (p1**2).sum(-1)) - (u + 0.5 * (p0**2).sum(-1))
        divergent = ~torch.isfinite(energy_change) | (energy_change > MAX_ENERGY_ERROR)
        accept_prob = torch.where(divergent, 0.0, torch.exp(-energy_change).clamp(max=1.0))
        accept = query.stream(f"{stream}/accept").uniform(k, index=t) < accept_prob
        z = torch.where(accept[..., None], z1, z)
        log_lik = torch.where(accept, log_lik1, log_lik)
        rate = accept_prob.mean(0)
        accept_sum += rate
        log_step = log_step + (rate - target_accept)
    return Walk(
        z,
        log_w,
        log_z,
        log_lik,
        (torch.round(log_step / _GRID) * _GRID).exp(),
        accept_sum / max(1, len(betas) - 1),
        resamplings,
    )


def _systematic(query: Query, log_w: torch.Tensor, stream: str, index: int) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996): K indices per query from one uniform, ``[K, B]``."""
    k = log_w.shape[0]
    cdf = torch.cumsum(torch.softmax(log_w, 0).T.double(), -1).contiguous()  # [B, K]
    u = query.stream(stream).uniform(1, index=index).double().T  # [B, 1]
    positions = (torch.arange(k, device=log_w.device, dtype=torch.float64) + u) / k
    return torch.searchsorted(cdf, positions.contiguous()).clamp_max(k - 1).T


@dataclasses.dataclass
class AISDiagnostics(Diagnostics):
    particles: int = 0
    temperatures: int = 0
    log_evidence: torch.Tensor | None = None  # [B], the estimate of log p(x_o)
    effective_sample_size: torch.Tensor | None = None  # [B], of the final weights
    acceptance_rate: torch.Tensor | None = None  # [B], mean HMC acceptance probability
    step_size: torch.Tensor | None = None  # [B], the final step size
    resamplings: torch.Tensor | None = None  # [B], times the particles were resampled


@register("ais")
class AIS(Posterior):
    """Annealed importance sampling from p(z) to p(z | x_o), with HMC moves and resampling.

    K particles start at prior draws and follow f_t(z) = p(z) p(x_o | z)^beta_t over a sigmoid
    schedule of T temperatures; with incremental weights w_t = p(x_o | z_{t-1})^(beta_t -
    beta_{t-1}) and one HMC transition per temperature,

        log p(x_o) ≈ sum over resampling epochs of log (1/K) sum_k w_k     (``log_evidence()``)

    is unbiased in p(x_o), so its log is a stochastic lower bound. Where a query's effective
    sample size falls below ``resample`` * K the particles are resampled systematically (an
    SMC sampler; ``resample=0`` is plain AIS). ``sample(n)`` draws particles by their final
    weights. Its error falls with T, not with a family's flexibility, so it serves as the
    reference where no grid applies; ``condvae.conditioning.bdmc`` brackets it from above.

    Arguments:
        particles: K, particles per query.
        temperatures: T, the number of annealing steps (HMC transitions).
        leapfrog: leapfrog steps per HMC transition.
        step_size: the initial leapfrog step size (adapted per query as the path narrows).
        target_accept: the HMC acceptance probability the step sizes aim for, in (0, 1).
        resample: the fraction of K below which the effective sample size triggers
            resampling, in [0, 1); 0 turns resampling off.
        rejuvenate: HMC transitions at the posterior applied to each draw of ``sample``.

    References:
        Neal, "Annealed importance sampling", Statistics and Computing, 2001.
        Del Moral, Doucet & Jasra, "Sequential Monte Carlo samplers", JRSS B, 2006.
        Wu, Burda, Salakhutdinov & Grosse, "On the quantitative analysis of decoder-based
        generative models", ICLR 2017, arXiv:1611.04273.
    """

    diagnostics_type = AISDiagnostics
    diagnostics: AISDiagnostics

    def __init__(
        self,
        query: Query,
        *,
        particles: int = 128,
        temperatures: int = 200,
        leapfrog: int = 5,
        step_size: float = 0.1,
        target_accept: float = 0.65,
        resample: float = 0.5,
        rejuvenate: int = 2,
    ) -> None:
        super().__init__(query)
        for name, value in (("particles", particles), ("temperatures", temperatures), ("leapfrog", leapfrog)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
        if not 0 < target_accept < 1:
            raise CondVAEError(f"target_accept: expected a value in (0, 1), got {target_accept!r}")
        if not step_size > 0:
            raise CondVAEError(f"step_size: expected a positive step size, got {step_size!r}")
        if not isinstance(rejuvenate, int) or isinstance(rejuvenate, bool) or rejuvenate < 0:
            raise CondVAEError(f"rejuvenate: expected a non-negative integer, got {rejuvenate!r}")
        if not 0 <= resample < 1:
            raise CondVAEError(f"resample: expected a fraction of the particles in [0, 1), got {resample!r}")
        self.particles, self.temperatures, self.leapfrog = particles, temperatures, leapfrog
        self.step_size, self.target_accept, self.resample = float(step_size), float(target_accept), resample
        self.rejuvenate = rejuvenate

    def fit_memory(self) -> tuple[str, float]:
        return "particles", decoded_bytes(self.query, self.particles)

    def run(self) -> None:
        q = self.query
        z = reparameterize(q.vae.prior, q.stream("ais/init").normal(self.particles, q.latent_dim))
        walk = anneal(
            q,
            z,
            sigmoid_schedule(self.temperatures),
            leapfrog_steps=self.leapfrog,
            step_size=self.step_size,
            target_accept=self.target_accept,
            resample=self.resample,
            stream="ais",
        )
        self.z, self.log_w = walk.z, walk.log_w
        self._log_evidence = walk.log_z + torch.logsumexp(walk.log_w, 0) - math.log(self.particles)
        d = self.diagnostics
        d.particles, d.temperatures, d.log_evidence = self.particles, self.temperatures, self._log_evidence
        d.effective_sample_size = 1.0 / (torch.softmax(walk.log_w, 0) ** 2).sum(0)
        d.acceptance_rate, d.step_size, d.resamplings = walk.acceptance_rate, walk.step_size, walk.resamplings
        d.decoder_evaluations_per_query = self.particles * self.temperatures * (self.leapfrog + 1)

    def log_evidence(self) -> torch.Tensor:
        return self._log_evidence

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n draws per query: particles picked by their final weights, each then moved by
        ``rejuvenate`` HMC transitions that leave p(z | x_o) invariant, so that the n draws are
        distinct points rather than repeats of K particles (a sharp p(y | z) makes repeats cost
        nats of query likelihood)."""
        q, index = self.query, self.draw_index()
        weights = torch.softmax(self.log_w, 0).T  # [B, K]
        pick = q.stream("ais/draw").categorical(weights, n, index=index)
        z = torch.gather(self.z, 0, pick[..., None].expand(-1, -1, self.z.shape[-1]))
        if not self.rejuvenate:
            return z
        potential, _ = _potential(q, 1.0)
        u, grad = potential(z)
        step = self.diagnostics.step_size[None, :, None]
        for move in range(self.rejuvenate):
            p0 = q.stream("ais/rejuvenate/momentum").normal(n, q.latent_dim, index=(index, move))
            z1, p1, u1, g1 = leapfrog(potential, z, p0, grad, step, self.leapfrog)
            energy_change = (u1 + 0.5 * (p1**2).sum(-1)) - (u + 0.5 * (p0**2).sum(-1))
            ok = torch.isfinite(energy_change) & (energy_change <= MAX_ENERGY_ERROR)
            accept_prob = torch.where(ok, torch.exp(-energy_change).clamp(max=1.0), 0.0)
            accept = q.stream("ais/rejuvenate/accept").uniform(n, index=(index, move)) < accept_prob
            z, u = torch.where(accept[..., None], z1, z), torch.where(accept, u1, u)
            grad = torch.where(accept[..., None], g1, grad)
        return z


def ais_log_evidence(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor | None = None, seed: int = 0, **options: Any
) -> torch.Tensor:
    """log p(x_o) per item by ``ais`` with ``options``; ``mask=None`` observes everything, so
    that log p(y | x_o) = log p(x) - log p(x_o) comes from two runs of the same sampler."""
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    query = Query(vae, x, mask, seed, complete=True)
    with frozen(vae), torch.enable_grad():
        return AIS.fit(query, **options).log_evidence()
