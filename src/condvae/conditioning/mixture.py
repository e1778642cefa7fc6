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

    References:
        Morningstar, Vikram, Ham, Gallagher & Dillon, "Automatic Differentiation Variational
        Inference with Mixtures", AISTATS 2021, arXiv:2003.01687.
    """

    def __init__(
        self, query: Query, *, steps: int = 500, samples: int = 16, lr: float = 0.05, components: int = 8
    ) -> None:
        super().__init__(query, steps=steps, samples=samples, lr=lr)
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
        """The stratified C-ELBO per query, the samples split over the components, ``[B]``."""
        k = self.logits.shape[-1]
        n = max(1, self.diagnostics.samples // k)
        eps = self.query.stream("flow/eps").normal(n * k, self.query.latent_dim, step).unflatten(0, (n, k))
        z = self.gaussians()(eps.transpose(1, 2)).transpose(1, 2)  # [n, K, B, d]: n draws per component
        own = torch.arange(k, device=z.device).view(1, k, 1, 1).expand(n, k, z.shape[2], 1)
        log_q = torch.logsumexp(self.components_log_prob(z, eps, own), -1)
        gap = self.query.log_joint(z) - log_q  # [n, K, B]
        return (gap.mean(0).T * torch.softmax(self.logits, -1)).sum(-1)

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
        return self._draw(n)[0]

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z, eps, pick = self._draw(n)
        return z, torch.logsumexp(self.components_log_prob(z, eps, pick.unsqueeze(-1)), -1)
