"""Exact posterior of a 2-d latent on a fine grid: the ground truth for every other method."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError
from condvae.models import VAE


def log_likelihood_table(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, z: torch.Tensor, prepared: Any = None
) -> torch.Tensor:
    """log p(x_o | z) for grid points ``z`` [G, B, 2] (or [G, 1, 2] shared), returns [G, B]."""
    rows = []
    step = max(1, min(4096, 2**25 // max(1, x.shape[0] * x[0].numel())))
    for start in range(0, z.shape[0], step):
        rows.append(vae.log_likelihood(x, z[start : start + step], mask, prepared))
    return torch.cat(rows)


@dataclasses.dataclass
class GridDiagnostics(Diagnostics):
    cells: int = 0


@register("grid")
class Grid(Posterior):
    """p(z | x_o) ∝ p(z) p(x_o | z) tabulated on a grid, for models with a 2-d latent.

    A coarse grid over [-extent, extent]^2 shared by all queries (one decoder pass serves
    them all) finds each query's box (the cells holding all but e^-30 of the coarse mass,
    plus one cell); a fine ``size`` x ``size`` grid over that box gives the answer. The
    density is taken as constant within a cell (a midpoint rule), so

        log p(x_o) ≈ logsumexp_g log p(x_o, z_g) + log(cell area)    (``log_evidence()``),

    samples pick a cell by its mass and a uniform point inside it, and log q(z) is the
    cell's mass over its area.

    Arguments:
        size: cells per axis of the fine grid (at least 8).
        extent: half-width of the coarse grid, in prior standard deviations.
    """

    exact = True
    diagnostics_type = GridDiagnostics
    diagnostics: GridDiagnostics

    def __init__(self, query: Query, *, size: int = 200, extent: float = 6.0) -> None:
        super().__init__(query)
        if query.latent_dim != 2:
            raise CondVAEError(f"method: 'grid' needs a 2-d latent, this model has {query.latent_dim}")
        if not isinstance(size, int) or size < 8:
            raise CondVAEError(f"size: expected a grid size of at least 8, got {size!r}")
        if not extent > 0:
            raise CondVAEError(f"extent: expected a positive half-width, got {extent!r}")
        self.size, self.extent = size, float(extent)

    def fit_memory(self) -> tuple[str, float]:
        # the tables (points, log joint, log mass) are held whole; the decoder runs in chunks
        return "size", 4.0 * self.size**2 * self.query.batch * 6 + 2**27

    def run(self) -> None:
        self._build()
        cells = self.size * self.size
        self.diagnostics.cells = cells
        # a fine grid per query, and the coarse grid decoded once for the whole batch
        self.diagnostics.decoder_evaluations_per_query = round(cells * (1 + 1 / self.query.batch))

    def log_evidence(self) -> torch.Tensor:
        return self._log_evidence

    def _axis_points(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Cell centres of a size x size grid per query over [lo, hi] boxes: [G, B, 2]."""
        t = (torch.arange(self.size, device=lo.device, dtype=lo.dtype) + 0.5) / self.size
        gx = lo[:, 0, None] + (hi[:, 0] - lo[:, 0])[:, None] * t  # [B, size]
        gy = lo[:, 1, None] + (hi[:, 1] - lo[:, 1])[:, None] * t
        z = torch.stack(torch.broadcast_tensors(gx[:, :, None], gy[:, None, :]), -1)  # [B, s, s, 2]
        return z.reshape(z.shape[0], -1, 2).transpose(0, 1)

    def _build(self) -> None:
        q = self.query
        device = q.x.device
        b = q.batch
        full = torch.tensor([self.extent, self.extent], device=device)
        lo, hi = (-full).expand(b, 2), full.expand(b, 2)
        coarse = self._axis_points(lo[:1], hi[:1])  # shared: [G, 1, 2]
        log_joint = q.vae.prior.log_prob(coarse) + log_likelihood_table(
            q.vae, q.x, q.mask, coarse, q.prepared
        )
        keep = log_joint > log_joint.max(0).values - 30.0
        cell = 2 * self.extent / self.size
        pts = coarse.expand(-1, b, -1)
        big = torch.full_like(pts, math.inf)
        lo = torch.where(keep[..., None], pts, big).amin(0) - cell
        hi = torch.where(keep[..., None], pts, -big).amax(0) + cell
        self.lo, self.hi = lo, hi
        self.z = self._axis_points(lo, hi)  # [G, B, 2]
        self.log_joint = q.vae.prior.log_prob(self.z) + log_likelihood_table(
            q.vae, q.x, q.mask, self.z, q.prepared
        )
        self.cell_area = ((hi - lo) / self.size).prod(-1)  # [B]
        self._log_evidence = torch.logsumexp(self.log_joint, 0) + self.cell_area.log()
        self.log_mass = torch.log_softmax(self.log_joint, 0)  # [G, B]

    def _cell_of(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rel = (z - self.lo) / (self.hi - self.lo)
        inside = ((rel >= 0) & (rel < 1)).all(-1)
        ij = (rel.clamp(0, 1 - 1e-7) * self.size).long()
        return ij[..., 0] * self.size + ij[..., 1], inside

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        draw = self.draw_index()
        index = self.query.stream("grid/cell").categorical(self.log_mass.exp().T, n, index=draw)  # [n, B]
        u = self.query.stream("grid/offset").uniform(n, 2, index=draw)
        centres = torch.gather(self.z, 0, index[..., None].expand(-1, -1, 2))
        width = (self.hi - self.lo) / self.size
        return centres + (u - 0.5) * width

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Piecewise-constant density of the grid posterior, ``z.shape[:-1]``."""
        index, inside = self._cell_of(z)
        flat = index.reshape(-1, self.query.batch)
        mass = torch.gather(self.log_mass, 0, flat.clamp_max(self.log_mass.shape[0] - 1)).reshape(index.shape)
        return torch.where(inside, mass - self.cell_area.log(), torch.full_like(mass, -math.inf))

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample(n)
        return z, self.log_prob(z)

    @torch.no_grad()
    def exact_query_log_likelihood(self, x_true: torch.Tensor) -> torch.Tensor:
        """log p(y_true | x_o) = log sum_g p(z_g | x_o) p(y_true | z_g), the ceiling of the metric."""
        x_true = x_true.to(self.query.x.device, torch.float32).reshape(self.query.x.shape)
        y_mask = ~self.query.mask
        vae = self.query.vae
        table = log_likelihood_table(vae, x_true, y_mask, self.z, vae.prepare(x_true, y_mask))
        return torch.logsumexp(self.log_mass + table, 0)
