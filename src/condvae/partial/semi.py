"""The ``semi`` method: a per-query cross-coder started at the partial encoder's answer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.distributions import Distribution, MultivariateNormal, Normal

from condvae.conditioning.base import Query, reparameterize
from condvae.conditioning.registry import register
from condvae.conditioning.transforms import Affine
from condvae.conditioning.variational import FitDiagnostics, FlowPosterior
from condvae.partial.encoder import PartialEncoder
from condvae.partial.ipa import IPA


def gaussian_moments(r: Distribution, query: Query, draws: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Cholesky factor of r: exact for a Gaussian r, from ``draws`` samples otherwise."""
    if isinstance(r, MultivariateNormal):
        return r.loc, r.scale_tril
    if isinstance(getattr(r, "base_dist", None), Normal):
        return r.mean, torch.diag_embed(r.stddev)
    z = reparameterize(r, query.stream("semi/moments").normal(draws, query.latent_dim))
    centred = z - z.mean(0)
    cov = torch.einsum("nbi,nbj->bij", centred, centred) / (draws - 1)
    jitter = 1e-5 * torch.eye(cov.shape[-1], device=cov.device)
    return z.mean(0), torch.linalg.cholesky(cov + jitter)


@dataclasses.dataclass
class SemiDiagnostics(FitDiagnostics):
    encoder: str = ""  # the partial encoder's name


@register("semi")
class SemiAmortized(FlowPosterior):
    """gvi started at a partial encoder's answer r(z | x_o, m) and refined per query:

        q_0 = N(mu_r, L_r L_r^T),   q_t: z = mu_r + L_r (a + B eps),   a = 0, B = I at t = 0,

    by t Adam steps on the C-ELBO. The refinement is gvi's affine map written in the coordinates
    the partial encoder whitens: a step of size lr moves the mean by lr *posterior standard
    deviations*, so one learning rate suits a 2-d MNIST posterior and a narrow 32-d
    Fashion-MNIST one alike. ``diagnostics.c_elbo_trace`` [steps, B] starts at the amortized
    answer, so the gain per step is read off directly.

    Arguments:
        steps: Adam steps (30: from the encoder, not the prior, a few dozen suffice).
        samples: Monte Carlo draws of the C-ELBO per step.
        iw: K, inner samples of the importance-weighted C-ELBO it maximises (1: the C-ELBO).
        lr: the learning rate, in posterior standard deviations per step (0.05 closes ~3/4 of
            the median C-ELBO gap between ipa and a 500-step gvi on MNIST latent 2 in 30 steps
            and stays steady on Fashion-MNIST's 32-d posteriors, where 0.1 oscillates).
        encoder: the partial encoder, as for ``ipa``.
        objective: which bundled encoder None picks, as for ``ipa``.

    References:
        Harvey, Naderiparizi & Wood, "Conditional Image Generation by Conditioning Variational
        Auto-Encoders", ICLR 2022, arXiv:2102.12037 (the partial encoder).
        Wu, Domke & Sanner, "Conditional Inference in Pre-trained Variational Autoencoders via
        Cross-coding", 2018, arXiv:1805.07785 (the refinement).
    """

    diagnostics_type = SemiDiagnostics

    def __init__(
        self,
        query: Query,
        *,
        steps: int = 30,
        samples: int = 16,
        lr: float = 0.05,
        iw: int = 1,
        encoder: PartialEncoder | str | Path | None = None,
        objective: str = "forward",
    ) -> None:
        start = IPA(query, encoder=encoder, objective=objective)
        with torch.no_grad():
            start.run()
            whiten = Affine(*gaussian_moments(start.r, query)).requires_grad_(False)
        flow = [Affine.identity(query.batch, query.latent_dim), whiten]
        super().__init__(query, flow, steps=steps, samples=samples, lr=lr, iw=iw)
        self.diagnostics.encoder = start.diagnostics.encoder
