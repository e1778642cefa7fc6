"""Cross-coding (paper 001, Algorithm 1): per-query variational inference over z.

q_psi(z) is the push-forward of eps ~ N(0, I) through an invertible map T_psi, one map per
query (every parameter has a leading B axis). Maximise, by reparameterised gradients and Adam,

    C-ELBO(psi) = E_eps[ log p(x_o, T(eps)) + log |det dT/d eps| ] + H[N(0, I)]

which lower-bounds log p(x_o); its gap is KL(q_psi(z) || p(z | x_o)), and by the paper's
Lemma 1 that bounds the KL between the implied and the true distributions of the query y.
The loss is the *sum* of the B C-ELBOs, so each query's gradient involves only its own
parameters, and Adam's update is elementwise: queries do not interact.
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from condvae.conditioning.base import Posterior, Query, Timer
from condvae.errors import CondVAEError
from condvae.models import VAE


@contextlib.contextmanager
def frozen(vae: VAE) -> Iterator[None]:
    """The pretrained VAE stays fixed: no gradients are accumulated into it."""
    flags = [p.requires_grad for p in vae.parameters()]
    training = vae.training
    vae.requires_grad_(False)
    vae.eval()
    try:
        yield
    finally:
        for p, flag in zip(vae.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        vae.train(training)


def standard_normal_log_prob(eps: torch.Tensor) -> torch.Tensor:
    return -0.5 * (eps**2).sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)


class FlowPosterior(Posterior):
    """Base of the cross-coders: subclasses give ``transform`` and create their parameters."""

    guaranteed_bound = True  # the C-ELBO is a true lower bound (False for the FCN)

    @abc.abstractmethod
    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = T(eps) and log |det dT/d eps|, for eps ``[n, B, d]``."""

    def parameters(self) -> list[torch.Tensor]:
        return [v for v in vars(self).values() if isinstance(v, torch.Tensor) and v.requires_grad]

    def _param(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach().clone().to(self.query.vae.device).requires_grad_(True)

    @classmethod
    def fit(
        cls,
        query: Query,
        steps: int = 500,
        samples: int = 16,
        lr: float = 0.05,
        **options: Any,
    ) -> FlowPosterior:
        """Adam on the batched C-ELBO with a cosine learning-rate decay."""
        for name, value in (("steps", steps), ("samples", samples)):
            if not isinstance(value, int) or value < 1:
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
        if not lr > 0:
            raise CondVAEError(f"lr: expected a positive learning rate, got {lr!r}")
        post = cls(query, **options)
        post.train(steps, samples, lr)
        return post

    def objective(self, step: int, samples: int) -> torch.Tensor:
        """Monte Carlo C-ELBO per query with the step's noise (differentiable), ``[B]``."""
        eps = self.query.noise(step, samples)
        z, log_det = self.transform(eps)
        return (self.query.log_joint(z) + log_det - standard_normal_log_prob(eps)).mean(0)

    def train(self, steps: int, samples: int, lr: float) -> None:
        params = self.parameters()
        optim = torch.optim.Adam(params, lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda t: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / steps))
        )
        trace: list[torch.Tensor] = []  # each step's C-ELBO estimate, before its update
        with Timer() as timer:
            for step in range(steps):
                c_elbo = self.objective(step, samples)
                optim.zero_grad(set_to_none=True)
                (-c_elbo.sum()).backward()
                optim.step()
                schedule.step()
                trace.append(c_elbo.detach())
        final = torch.stack(trace[-max(1, steps // 10) :]).mean(0)
        if not torch.isfinite(final).all():
            raise CondVAEError(f"lr: {self.name} diverged (non-finite C-ELBO); lower lr")
        self.diagnostics.update(
            steps=steps,
            samples=samples,
            lr=lr,
            seconds=timer.seconds,
            final_c_elbo=final,
            c_elbo_trace=torch.stack(trace),  # [steps, B]
            decoder_evaluations_per_query=steps * samples,
            guaranteed_bound=self.guaranteed_bound,
        )
        for p in params:
            p.requires_grad_(False)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.transform(self.query.noise(self._next_counter(), n))[0]

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        eps = self.query.noise(self._next_counter(), n)
        z, log_det = self.transform(eps)
        return z, standard_normal_log_prob(eps) - log_det
