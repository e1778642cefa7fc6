"""The mixture cross-coder: K full-covariance Gaussian components per query."""

from __future__ import annotations

import math

import torch
from torch import nn

from condvae.conditioning.base import Query
from condvae.conditioning.registry import register
from condvae.conditioning.transforms import Affine, TrilAffineTransform
from condvae.conditioning.variational import CrossCoder
from condvae.errors import CondVAEError


@register("mixture")
class Mixture(CrossCoder):
    """q(z) = sum_k pi_k N(z; mu_k, L_k L_k^T), fitted on the stratified C-ELBO

        C-ELBO = sum_k pi_k E_eps[ log p(x_o, mu_k + L_k eps) - log q(mu_k + L_k eps) ],

    each component reparameterised separately and weighted by its softmax weight pi_k: unbiased,
    with gradients for the components and the weights. With sparse evidence p(z | x_o) is often
    multimodal; a single Gaussian or a short flow then drops modes, and a dropped mode that holds
    the truth costs many nats of query likelihood. The components start at K prior draws with
    half the prior's scale, so they begin spread over the region the posterior can occupy.

    Arguments:
        steps: Adam steps; lr: Adam's learning rate.
        samples: C-ELBO draws per step, split over the components (one each at least).
        components: K, the number of Gaussians.
        iw: inner draws per component of the stratified importance-weighted C-ELBO it
            maximises (1: the stratified C-ELBO above).

    References:
        Morningstar, Vikram, Ham, Gallagher & Dillon, "Automatic Differentiation Variational
        Inference with Mixtures", AISTATS 2021, arXiv:2003.01687.
    """

    def __init__(
        self,
        query: Query,
        *,
        steps: int = 500,
        samples: int = 16,
        lr: float = 0.05,
        iw: int = 1,
        components: int = 8,
    ) -> None:
        super().__init__(query, steps=steps, samples=samples, lr=lr, iw=iw)
        if not isinstance(components, int) or components < 1:
            raise CondVAEError(f"components: expected a positive integer, got {components!r}")
        b, d, device = query.batch, query.latent_dim, query.vae.device
        start = query.stream("mixture/init").normal(components, d).transpose(0, 1)  # [B, K, d]
        self.gaussians = Affine(start, 0.5 * torch.eye(d, device=device).expand(b, components, d, d))
        self.logits = nn.Parameter(torch.zeros(b, components, device=device))

    def parameters(self) -> list[torch.Tensor]:
        return [*self.gaussians.parameters(), self.logits]

    def components_log_prob(
        self, z: torch.Tensor, eps: torch.Tensor | None = None, own: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log pi_k + log N(z; mu_k, L_k L_k^T) for z [..., B, d] -> [..., B, K].

        For draws z = mu_k + L_k eps of known components ``own`` [..., B, 1], pass ``eps``: the
        own component's noise is then taken as drawn, not recovered by the triangular solve.
        When a component's L_k nearly collapses the solve loses precision, and a wrongly low
        log q reads as a huge C-ELBO that Adam chases (the divergence once seen on the 160-d
        olivetti model); exact own terms keep log q >= log pi_k N_k(z)."""
        gaussians = self.gaussians()
        noise = gaussians.inv(z.unsqueeze(-2))  # [..., B, K, d]
        if eps is not None and own is not None:
            index = own.unsqueeze(-1).expand(*own.shape, z.shape[-1])
            noise = noise.scatter(-2, index, eps.unsqueeze(-2))
        log_n = -0.5 * (noise**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        return torch.log_softmax(self.logits, -1) + log_n - gaussians.log_abs_det_jacobian(noise, z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.components_log_prob(z), -1)

    def objective(self, step: int) -> torch.Tensor:
        """The stratified C-ELBO per query, the samples split over the components, ``[B]``.

        With ``iw`` = T > 1, the stratified importance-weighted bound (Morningstar et al. 2021):
        the mean over groups of log sum_k pi_k (1/T) sum_t w_{k,t}, T draws of each component
        per group; it pays a component for covering mass the others miss."""
        k, t = self.logits.shape[-1], self.diagnostics.iw
        n = max(t, self.diagnostics.samples // k) // t * t
        eps = self.query.stream("flow/eps").normal(n * k, self.query.latent_dim, step).unflatten(0, (n, k))
        z = self.gaussians()(eps.transpose(1, 2)).transpose(1, 2)  # [n, K, B, d]: n draws per component
        own = torch.arange(k, device=z.device).view(1, k, 1, 1).expand(n, k, z.shape[2], 1)
        log_q = torch.logsumexp(self.components_log_prob(z, eps, own), -1)
        gap = self.query.log_joint(z) - log_q  # [n, K, B]
        if t == 1:
            return (gap.mean(0).T * torch.softmax(self.logits, -1)).sum(-1)
        weighted = gap.unflatten(0, (-1, t)) + torch.log_softmax(self.logits, -1).T  # [n / T, T, K, B]
        return (torch.logsumexp(weighted.flatten(1, 2), 1) - math.log(t)).mean(0)

    @torch.no_grad()
    def resampled(self, n: int) -> torch.Tensor:
        """n draws per query, each one of T draws of every component (T = ``iw``) picked with
        probability pi_k w_{k,t}: the distribution the stratified bound belongs to."""
        t, q = self.diagnostics.iw, self.query
        k, d = self.logits.shape[-1], q.latent_dim
        per = max(1, min(self._chunks(n * t * k)) // (t * k))
        out = []
        for start in range(0, n, per):
            m, index = min(per, n - start), self.draw_index()
            eps = q.stream("mixture/resample/eps").normal(m * t * k, d, index).unflatten(0, (m * t, k))
            z = self.gaussians()(eps.transpose(1, 2)).transpose(1, 2)  # [m T, K, B, d]
            own = torch.arange(k, device=z.device).view(1, k, 1, 1).expand(m * t, k, q.batch, 1)
            log_q = torch.logsumexp(self.components_log_prob(z, eps, own), -1)
            log_w = q.log_joint(z) - log_q + torch.log_softmax(self.logits, -1).T  # [m T, K, B]
            log_w, z = log_w.unflatten(0, (m, t)).flatten(1, 2), z.unflatten(0, (m, t)).flatten(1, 2)
            cdf = torch.cumsum(torch.softmax(log_w.double(), 1), 1)  # [m, T K, B]
            u = q.stream("mixture/resample/pick").uniform(m, index=index).double()
            pick = (cdf < u[:, None, :]).sum(1).clamp_max(t * k - 1)  # [m, B]
            out.append(torch.gather(z, 1, pick[:, None, :, None].expand(-1, 1, -1, d))[:, 0])
        return torch.cat(out)

    def _draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n draws per query: z and the noise eps ``[n, B, d]``, the component picked ``[n, B]``."""
        index = self.draw_index()
        weights = torch.softmax(self.logits, -1)
        pick = self.query.stream("mixture/pick").categorical(weights, n, index)  # [n, B]
        rows = torch.arange(self.query.batch, device=pick.device)
        chosen = TrilAffineTransform(self.gaussians.loc[rows, pick], self.gaussians.scale_tril()[rows, pick])
        eps = self.query.stream("mixture/sample").normal(n, self.query.latent_dim, index)
        return chosen(eps), eps, pick

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        if self.diagnostics.iw > 1:
            return self.resampled(n)
        return self._draw(n)[0]

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z, eps, pick = self._draw(n)
        return z, torch.logsumexp(self.components_log_prob(z, eps, pick.unsqueeze(-1)), -1)
