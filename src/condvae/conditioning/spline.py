"""Neural-spline coupling flow cross-coder (Durkan et al. 2019), batched per query.

    T(eps) = mu + L g(eps),   g = c_K o ... o c_1

Each coupling layer c_k keeps half of the coordinates (alternating) and moves the other half
through monotonic rational-quadratic splines on [-bound, bound] (identity outside) whose bin
widths, heights and knot slopes come from a small per-query MLP of the kept half. The spline
itself is zuko's ``MonotonicRQSTransform``; the conditioner's weights carry a leading B axis,
so all queries train at once. The last conditioner layer starts at zero, so every spline
starts as the identity and the flow starts as gvi's Gaussian.
"""

from __future__ import annotations

import torch
from zuko.transforms import MonotonicRQSTransform

from condvae.conditioning.base import Query
from condvae.conditioning.gaussian import GVI
from condvae.conditioning.registry import register
from condvae.conditioning.variational import standard_normal_log_prob
from condvae.errors import CondVAEError


@register("spline")
class Spline(GVI):
    def __init__(
        self, query: Query, layers: int = 4, bins: int = 8, hidden: int = 32, bound: float = 5.0
    ) -> None:
        super().__init__(query)
        for name, value in (("layers", layers), ("bins", bins), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
        d, b = query.latent_dim, query.batch
        self.layers, self.bins, self.bound = layers, bins, float(bound)
        self.splits = []
        for k in range(layers):
            moved = torch.arange(d) % 2 == k % 2 if d > 1 else torch.ones(1, dtype=torch.bool)
            self.splits.append(moved)
        self.n_params = 3 * bins - 1
        init = query.noise(-6, layers * hidden).permute(1, 0, 2).reshape(b, layers, hidden, d)
        self.w1 = self._param(init / max(1, d // 2) ** 0.5)  # [B, K, H, d] (masked to kept dims)
        self.b1 = self._param(torch.zeros(b, layers, hidden))
        self.w2 = self._param(torch.zeros(b, layers, d * self.n_params, hidden))
        self.b2 = self._param(torch.zeros(b, layers, d * self.n_params))

    def _spline(self, k: int, h: torch.Tensor, moved: torch.Tensor) -> MonotonicRQSTransform:
        """Layer k's splines, conditioned on the kept coordinates of h."""
        kept = h * (~moved)
        act = torch.relu(torch.einsum("bhd,nbd->nbh", self.w1[:, k], kept) + self.b1[:, k])
        params = torch.einsum("bph,nbh->nbp", self.w2[:, k], act) + self.b2[:, k]
        params = params.reshape(*h.shape, self.n_params)  # [n, B, d, 3K-1]
        widths, heights, slopes = params.split([self.bins, self.bins, self.bins - 1], -1)
        return MonotonicRQSTransform(widths, heights, slopes, bound=self.bound)

    @torch.no_grad()
    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """eps = g^{-1}(L^{-1}(z - mu)); each coupling inverts given its unchanged kept half."""
        h = super().inverse(z)
        for k in reversed(range(self.layers)):
            moved = self.splits[k].to(z.device)
            h = torch.where(moved, self._spline(k, h, moved).inv(h), h)
        return h

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) = log N(eps) - log |det dT/d eps| at eps = T^{-1}(z)."""
        eps = self.inverse(z)
        return standard_normal_log_prob(eps) - self.transform(eps)[1]

    def transform(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = eps
        log_det = torch.zeros(eps.shape[:-1], device=eps.device)
        for k, moved in enumerate(self.splits):
            moved = moved.to(eps.device)
            spline = self._spline(k, h, moved)
            y, ladj = spline.call_and_ladj(h)
            h = torch.where(moved, y, h)
            log_det = log_det + (ladj * moved).sum(-1)
        z, affine_log_det = super().transform(h)
        return z, log_det + affine_log_det
