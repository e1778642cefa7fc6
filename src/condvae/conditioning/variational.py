"""Cross-coding: per-query variational inference over z, fitted by Adam on the C-ELBO.

Every parameter has a leading B axis and the loss is the *sum* of the B C-ELBOs, so each
query's gradient involves only its own parameters and Adam's update is elementwise: queries do
not interact. ``FlowPosterior`` is q(z) = the push-forward of N(0, I) through a list of
transforms (``condvae.conditioning.transforms``); the registered flows declare that list.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, Transform
from zuko.transforms import ComposedTransform

from condvae.conditioning.base import Diagnostics, Posterior, Query
from condvae.conditioning.monitor import tick
from condvae.conditioning.transforms import Affine, FlowLayer
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


@dataclasses.dataclass
class FitDiagnostics(Diagnostics):
    steps: int = 0
    samples: int = 0
    lr: float = 0.0
    iw: int = 1  # inner samples of the importance-weighted objective (1: the C-ELBO)
    final_c_elbo: torch.Tensor | None = None  # [B], the mean of the last tenth of the steps (IW with iw > 1)
    c_elbo_trace: torch.Tensor | None = None  # [steps, B], each step's estimate before its update
    guaranteed_bound: bool = True  # False when the map is not one to one (fcn)


class CrossCoder(Posterior):
    """A q(z) fitted per query by Adam on the C-ELBO, with a cosine learning-rate decay.

        C-ELBO(q) = E_q[ log p(x_o, z) - log q(z) ] <= log p(x_o)

    Its gap is KL(q(z) || p(z | x_o)), which bounds the KL between the implied and the true
    distributions of the query (Wu, Domke & Sanner, "Conditional Inference in Pre-trained
    Variational Autoencoders via Cross-coding", 2018, arXiv:1805.07785). That KL is
    mode-seeking: a q that drops a mode pays little. With ``iw`` = K > 1 the objective is the
    importance-weighted bound

        C-ELBO_K(q) = E[ log (1/K) sum_k p(x_o, z_k) / q(z_k) ],   z_1..K ~ q,

    which tightens towards log p(x_o) as K grows and rewards a q that covers every mode, since
    it is the C-ELBO of the self-normalised resampling of K draws of q (Burda, Grosse &
    Salakhutdinov, "Importance weighted autoencoders", 2016; Domke & Sheldon, "Importance
    weighting and variational inference", 2018). Each step then uses max(samples, K) draws,
    rounded down to whole groups of K. The distribution that bound belongs to, and the one a
    K > 1 fit is made for, is that resampling: ``sample`` then draws K from q and keeps one
    with probability proportional to its weight (K times the decoder work per draw), while
    ``log_prob``, ``sample_and_log_prob`` and ``c_elbo`` are those of q itself.
    """

    diagnostics_type = FitDiagnostics
    diagnostics: FitDiagnostics

    def __init__(self, query: Query, *, steps: int, samples: int, lr: float, iw: int = 1) -> None:
        super().__init__(query)
        for name, value in (("steps", steps), ("samples", samples), ("iw", iw)):
            if not isinstance(value, int) or value < 1:
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
        if not (isinstance(lr, int | float) and lr > 0):
            raise CondVAEError(f"lr: expected a positive learning rate, got {lr!r}")
        d = self.diagnostics
        draws = max(samples, iw) // iw * iw
        d.steps, d.samples, d.lr, d.iw, d.decoder_evaluations_per_query = steps, draws, lr, iw, steps * draws

    @abc.abstractmethod
    def parameters(self) -> list[torch.Tensor]:
        """The tensors Adam fits."""

    @abc.abstractmethod
    def objective(self, step: int) -> torch.Tensor:
        """The step's differentiable Monte Carlo C-ELBO (C-ELBO_K with ``iw`` = K) per query, ``[B]``."""

    @torch.no_grad()
    def resampled(self, n: int) -> torch.Tensor:
        """n draws per query, each one of K draws of q picked by its weight p(x_o, z) / q(z)."""
        k, q = self.diagnostics.iw, self.query
        per = max(1, min(self._chunks(n * k)) // k)  # draws whose K candidates fit in memory at once
        out = []
        for start in range(0, n, per):
            m = min(per, n - start)
            z, log_q = self.sample_and_log_prob(m * k)
            log_w = (q.log_joint(z) - log_q).unflatten(0, (m, k))  # [m, K, B]
            cdf = torch.cumsum(torch.softmax(log_w.double(), 1), 1)  # inverse CDF over the K candidates
            u = q.stream("iw/resample").uniform(m, index=self.draw_index()).double()  # [m, B]
            pick = (cdf < u[:, None, :]).sum(1).clamp_max(k - 1)  # [m, B]
            z = z.unflatten(0, (m, k))
            out.append(torch.gather(z, 1, pick[:, None, :, None].expand(-1, 1, -1, z.shape[-1]))[:, 0])
        return torch.cat(out)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """Log weights log p(x_o, z) - log q(z) of the step's draws ``[S, B]`` -> C-ELBO_K ``[B]``:
        the mean over S / K groups of log (1/K) sum_k w_k (the plain mean for K = 1)."""
        k = self.diagnostics.iw
        if k == 1:
            return log_w.mean(0)
        groups = log_w.unflatten(0, (-1, k))
        return (torch.logsumexp(groups, 1) - math.log(k)).mean(0)

    def run(self) -> None:
        steps, params = self.diagnostics.steps, self.parameters()
        optim = torch.optim.Adam(params, lr=self.diagnostics.lr, foreach=True)  # one op for all layers
        decay = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda t: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / steps))
        )
        trace = []
        with torch.enable_grad():
            for step in range(steps):
                c_elbo = self.objective(step)
                optim.zero_grad(set_to_none=True)
                (-c_elbo.sum()).backward()
                optim.step()
                decay.step()
                trace.append(c_elbo.detach())
                tick(step + 1, steps, self.name)
        final = torch.stack(trace[-max(1, steps // 10) :]).mean(0)
        if not torch.isfinite(final).all():
            raise CondVAEError(f"lr: {self.name} diverged (non-finite C-ELBO); lower lr")
        self.diagnostics.final_c_elbo, self.diagnostics.c_elbo_trace = final, torch.stack(trace)
        for p in params:
            p.requires_grad_(False)


class FlowPosterior(CrossCoder):
    """q(z): eps ~ N(0, I) pushed through the ``transforms`` T_1, ..., T_K in order,

        log q(T(eps)) = log N(eps; 0, I) - sum_k log |det dT_k / dh_{k-1}|.

    ``log_prob`` at arbitrary z needs every transform's inverse (meanfield, gvi, spline, semi);
    the others (planar, fcn) score only their own samples.
    """

    def __init__(
        self, query: Query, transforms: list[FlowLayer], *, steps: int, samples: int, lr: float, iw: int = 1
    ) -> None:
        super().__init__(query, steps=steps, samples=samples, lr=lr, iw=iw)
        device, d = query.vae.device, query.latent_dim
        self.flow = nn.ModuleList(transforms).to(device)
        self.base = Independent(Normal(torch.zeros(d, device=device), torch.ones(d, device=device)), 1)
        self.diagnostics.guaranteed_bound = all(t.bijective for t in transforms)

    def parameters(self) -> list[torch.Tensor]:
        return [p for p in self.flow.parameters() if p.requires_grad]

    def transform(self) -> Transform:
        """T = T_K o ... o T_1 with the current parameters."""
        return ComposedTransform(*(t() for t in self.flow))

    def objective(self, step: int) -> torch.Tensor:
        eps = self.query.stream("flow/eps").normal(self.diagnostics.samples, self.query.latent_dim, step)
        z, log_det = self.transform().call_and_ladj(eps)
        return self.bound(self.query.log_joint(z) + log_det - self.base.log_prob(eps))

    def _eps(self, n: int) -> torch.Tensor:
        return self.query.stream("flow/sample").normal(n, self.query.latent_dim, self.draw_index())

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        if self.diagnostics.iw > 1:
            return self.resampled(n)
        return self.transform()(self._eps(n))

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        eps = self._eps(n)
        z, log_det = self.transform().call_and_ladj(eps)
        return z, self.base.log_prob(eps) - log_det

    @torch.no_grad()
    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """eps = T^{-1}(z), for z ``[..., B, d]``."""
        refused = [type(t).__name__ for t in self.flow if not t.invertible]
        if refused:
            raise CondVAEError(f"method {self.name!r} cannot score arbitrary z: {refused[0]} has no inverse")
        return self.transform().inv(z)

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        eps = self.inverse(z)
        return self.base.log_prob(eps) - self.transform().call_and_ladj(eps)[1]

    @torch.no_grad()
    def distribution(self) -> MultivariateNormal:
        """q(z) as a torch Gaussian with batch shape [B], for flows of affine maps only."""
        if not all(isinstance(t, Affine) for t in self.flow):
            raise CondVAEError(f"method {self.name!r} is not Gaussian: use sample() or log_prob()")
        b, d = self.query.batch, self.query.latent_dim
        loc = self.transform()(torch.zeros(b, d, device=self.query.vae.device))
        tril = functools.reduce(
            lambda acc, t: t.scale_tril() @ acc, self.flow, torch.eye(d, device=loc.device)
        )
        return MultivariateNormal(loc, scale_tril=tril)
