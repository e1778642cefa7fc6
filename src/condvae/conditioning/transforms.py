"""Batched flow transforms for the cross-coders: one set of parameters per query.

Each module is a zuko ``LazyTransform``: its parameters carry the leading batch axes of the
queries (B, or B x K for a mixture) and calling it builds a ``Transform`` on ``[..., *batch, d]``
whose ``call_and_ladj`` gives (z, log |det dz/d eps|) and, where ``invertible``, ``inv``.
``bijective`` says whether the map is one to one, so that a density by change of variables,
and hence the C-ELBO, is a true lower bound.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Transform, constraints
from torch.nn.functional import softplus
from zuko.lazy import LazyTransform
from zuko.transforms import CouplingTransform, DependentTransform, MonotonicRQSTransform


def softplus_inverse(y: Tensor) -> Tensor:
    """x with softplus(x) = y (y > 0), stable for small and large y."""
    return y + torch.log(-torch.expm1(-y))


SOFTPLUS_INV_1 = float(softplus_inverse(torch.tensor(1.0)))  # softplus(SOFTPLUS_INV_1) = 1


class FlowLayer(LazyTransform):
    """A batched layer: ``invertible``, ``inv`` in closed form; ``bijective``, one to one."""

    invertible: ClassVar[bool] = True  # ``inv`` is available in closed form
    bijective: ClassVar[bool] = True


class TrilAffineTransform(Transform):
    """z = loc + L eps for a lower-triangular L with a positive diagonal, batched."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: Tensor, tril: Tensor) -> None:
        super().__init__()
        self.loc, self.tril = loc, tril

    def _call(self, x: Tensor) -> Tensor:
        return self.loc + torch.einsum("...ij,...j->...i", self.tril, x)

    def _inverse(self, y: Tensor) -> Tensor:
        # the samples go in the columns: one triangular solve per query, not per sample
        centred = y - self.loc
        rhs = centred.reshape(-1, *self.tril.shape[:-1]).movedim(0, -1)
        eps = torch.linalg.solve_triangular(self.tril, rhs, upper=False)
        return eps.movedim(-1, 0).reshape(centred.shape)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.tril.diagonal(dim1=-2, dim2=-1).log().sum(-1).expand(x.shape[:-1])


class Affine(FlowLayer):
    """z = mu + L eps, L lower-triangular with a softplus diagonal (diagonal only if ``diagonal``).

    log |det dz/d eps| = sum_i log L_ii. Parameters: ``loc`` [*batch, d] and the unconstrained
    ``raw`` [*batch, d, d] (or [*batch, d]); built from the initial ``loc`` and ``scale_tril``.
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor, diagonal: bool = False) -> None:
        super().__init__()
        raw_diag = softplus_inverse(torch.diagonal(scale_tril, dim1=-2, dim2=-1))
        self.diagonal = diagonal
        self.loc = nn.Parameter(loc.detach().clone())
        self.raw = nn.Parameter(
            raw_diag if diagonal else torch.tril(scale_tril, -1) + torch.diag_embed(raw_diag)
        )

    @classmethod
    def identity(cls, *shape: int, diagonal: bool = False) -> Affine:
        """mu = 0, L = I, with ``loc`` of shape ``[*shape]`` (the last entry is d)."""
        return cls(torch.zeros(shape), torch.eye(shape[-1]).expand(*shape, shape[-1]), diagonal)

    def scale_tril(self) -> Tensor:
        if self.diagonal:
            return torch.diag_embed(softplus(self.raw))
        diag = softplus(torch.diagonal(self.raw, dim1=-2, dim2=-1))
        return torch.tril(self.raw, -1) + torch.diag_embed(diag)

    def forward(self, c: Tensor | None = None) -> Transform:
        return TrilAffineTransform(self.loc, self.scale_tril())


class PlanarTransform(Transform):
    """h' = h + u tanh(w^T h + b), log |det| = log |1 + (1 - tanh^2(w^T h + b)) w^T u|."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, w: Tensor, u: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.w, self.u, self.bias = w, u, bias

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        act = torch.tanh((x * self.w).sum(-1) + self.bias)
        psi_u = (1 - act**2) * (self.w * self.u).sum(-1)
        return x + act.unsqueeze(-1) * self.u, torch.log1p(psi_u.clamp_min(-1 + 1e-6))


class Planar(FlowLayer):
    """One planar layer (Rezende & Mohamed 2015), kept invertible by replacing u with

        u_hat = u + (m(w^T u) - w^T u) w / |w|^2,   m(a) = -1 + softplus(a + log(e - 1)),

    so that w^T u_hat = m(w^T u) > -1. The shift makes m(0) = 0: a layer whose u starts near 0
    starts near the identity (the textbook m(a) = -1 + softplus(a) kicks it by -0.31 w / |w|^2).
    The inverse exists but has no closed form. Parameters ``w``, ``u`` [B, d], ``bias`` [B].
    """

    invertible = False

    def __init__(self, w: Tensor, u: Tensor) -> None:
        super().__init__()
        self.w, self.u = nn.Parameter(w.detach().clone()), nn.Parameter(u.detach().clone())
        self.bias = nn.Parameter(torch.zeros(w.shape[:-1]))

    def u_hat(self) -> Tensor:
        wu = (self.w * self.u).sum(-1, keepdim=True)
        w_norm2 = (self.w**2).sum(-1, keepdim=True).clamp_min(1e-12)
        return self.u + (softplus(wu + SOFTPLUS_INV_1) - 1 - wu) * self.w / w_norm2

    def forward(self, c: Tensor | None = None) -> Transform:
        return PlanarTransform(self.w, self.u_hat(), self.bias)


class SplineCoupling(FlowLayer):
    """A neural-spline coupling layer (Durkan et al. 2019): the ``moved`` coordinates go through
    monotonic rational-quadratic splines on [-bound, bound] (identity outside; zuko's
    ``MonotonicRQSTransform``) whose widths, heights and slopes come from a one-hidden-layer MLP
    of the kept coordinates. ``w1`` [B, H, kept] is the MLP's initial first layer; its last
    layer starts at zero, so the layer starts as the identity.
    """

    def __init__(self, moved: Tensor, w1: Tensor, bins: int = 8, bound: float = 5.0) -> None:
        super().__init__()
        (b, hidden), out = w1.shape[:2], int(moved.sum()) * (3 * bins - 1)
        self.bins, self.bound = bins, bound
        self.register_buffer("moved", moved)
        self.w1, self.b1 = nn.Parameter(w1.detach().clone()), nn.Parameter(torch.zeros(b, hidden))
        self.w2, self.b2 = nn.Parameter(torch.zeros(b, out, hidden)), nn.Parameter(torch.zeros(b, out))

    def splines(self, kept: Tensor) -> Transform:
        act = torch.relu(torch.einsum("bhk,...bk->...bh", self.w1, kept) + self.b1)
        # Adam moves each weight by about lr a step: over the width, the spline parameters would
        # move by lr * hidden, turning splines near-flat (and their inverse ill-conditioned) in
        # a few steps; the mean over the hidden units moves them by about lr.
        params = torch.einsum("boh,...bh->...bo", self.w2, act) / act.shape[-1] + self.b2
        k = self.bins
        widths, heights, slopes = params.unflatten(-1, (-1, 3 * k - 1)).split([k, k, k - 1], -1)
        return DependentTransform(MonotonicRQSTransform(widths, heights, slopes, bound=self.bound), 1)

    def forward(self, c: Tensor | None = None) -> Transform:
        return CouplingTransform(self.splines, ~self.moved)


class MLPTransform(Transform):
    """h' = h + W2 tanh(W1 h + b1); log |det| from the autograd Jacobian, d backward passes."""

    domain = codomain = constraints.real_vector
    bijective = False

    def __init__(self, w1: Tensor, b1: Tensor, w2: Tensor) -> None:
        super().__init__()
        self.w1, self.b1, self.w2 = w1, b1, w2

    def _call(self, x: Tensor) -> Tensor:
        hidden = torch.tanh(torch.einsum("bhd,...bd->...bh", self.w1, x) + self.b1)
        return x + torch.einsum("bdh,...bh->...bd", self.w2, hidden)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():  # the Jacobian needs a graph even when sampling
            x = x if x.requires_grad else x.detach().clone().requires_grad_(True)
            y = self._call(x)
            rows = [torch.autograd.grad(y[..., i].sum(), x, create_graph=True)[0] for i in range(y.shape[-1])]
            ladj = torch.linalg.slogdet(torch.stack(rows, -2))[1]
        return (y, ladj) if torch.is_grad_enabled() else (y.detach(), ladj.detach())


class MLP(FlowLayer):
    """An unconstrained residual MLP layer (``MLPTransform``): nothing keeps it one to one, so
    neither its inverse nor a guaranteed bound exists. ``w1`` [B, H, d] and ``w2`` [B, d, H]
    are the initial weights."""

    invertible = bijective = False

    def __init__(self, w1: Tensor, w2: Tensor) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Parameter(w1.detach().clone()), nn.Parameter(w2.detach().clone())
        self.b1 = nn.Parameter(torch.zeros(w1.shape[:-1]))

    def forward(self, c: Tensor | None = None) -> Transform:
        return MLPTransform(self.w1, self.b1, self.w2)
