"""Every cross-coder flow and every transform: shapes, gradients, per-query parameters, log|det|
against the autograd Jacobian, and the inverse and density where there is one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from condvae import LinearGaussianVAE
from condvae.conditioning import METHODS, Query, condition
from condvae.conditioning.transforms import MLP, Affine, FlowLayer, Planar, SplineCoupling
from condvae.conditioning.variational import FlowPosterior
from condvae.errors import CondVAEError

B, D = 4, 3
# every registered flow (semi is gvi's map started from a partial encoder: test_partial.py)
FLOWS = sorted(name for name, cls in METHODS.items() if issubclass(cls, FlowPosterior) and name != "semi")
LAYERS: dict[str, Callable[[], FlowLayer]] = {
    "Affine": lambda: Affine.identity(B, D),
    "Affine-diagonal": lambda: Affine.identity(B, D, diagonal=True),
    "Planar": lambda: Planar(torch.randn(B, D), torch.randn(B, D)),
    "SplineCoupling": lambda: SplineCoupling(
        torch.tensor([True, False, True]), torch.randn(B, 16, 1), bins=6
    ),
    "MLP": lambda: MLP(torch.randn(B, 8, D), torch.randn(B, D, 8)),
}


def _moved(module: nn.Module) -> None:
    """Parameters away from their identity-like start; float64, so that the comparisons with
    autograd measure the maths, not float32 rounding."""
    module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, dtype=torch.float64))


def _case(case: str) -> tuple[nn.Module, Callable[[], torch.distributions.Transform], FlowPosterior | None]:
    torch.manual_seed(0)
    if case in LAYERS:
        layer = LAYERS[case]()
        _moved(layer)
        return layer, layer, None
    model = LinearGaussianVAE.random(data_dim=6, latent_dim=D, seed=2).requires_grad_(False)
    mask = torch.rand(B, 6) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    post = METHODS[case](Query(model, torch.randn(B, 6), mask))
    assert isinstance(post, FlowPosterior)
    _moved(post.flow)
    return post.flow, post.transform, post


def test_every_flow_is_covered() -> None:
    assert {"meanfield", "gvi", "planar", "fcn", "spline"} <= set(FLOWS)


@pytest.mark.parametrize("case", FLOWS + sorted(LAYERS))
def test_flow(case: str) -> None:
    module, transform, post = _case(case)
    eps = torch.randn(5, B, D, dtype=torch.float64)

    # shapes, and gradients that reach every parameter of query 0 only (no sharing)
    z, log_det = transform().call_and_ladj(eps)
    assert z.shape == (5, B, D) and log_det.shape == (5, B)
    (z[:, 0].sum() + log_det[:, 0].sum()).backward()
    for p in module.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert float(p.grad[0].abs().sum()) > 0 and float(p.grad[1:].abs().sum()) == 0.0

    # log |det dz/d eps| against the autograd Jacobian of one sample
    for n, b in ((0, 0), (3, 2)):

        def single(e: torch.Tensor, n: int = n, b: int = b) -> torch.Tensor:
            full = eps.detach().clone()
            full[n, b] = e
            return transform()(full)[n, b]

        jacobian = torch.autograd.functional.jacobian(single, eps[n, b])
        torch.testing.assert_close(log_det[n, b], torch.linalg.slogdet(jacobian)[1], atol=1e-8, rtol=1e-8)

    # the inverse and the density where every transform has one; a one-line refusal otherwise
    invertible = all(t.invertible for t in module.modules() if isinstance(t, FlowLayer))
    with torch.no_grad():
        if invertible:
            torch.testing.assert_close(transform().inv(z), eps, atol=1e-6, rtol=1e-6)
        if post is not None and invertible:  # log q(z) as sample_and_log_prob gives it
            torch.testing.assert_close(
                post.log_prob(z), post.base.log_prob(eps) - log_det, atol=1e-6, rtol=1e-6
            )
        elif post is not None:
            with pytest.raises(
                CondVAEError, match=f"method '{case}' cannot score arbitrary z: .* has no inverse"
            ):
                post.log_prob(z)


def test_fcn_says_its_bound_is_not_guaranteed() -> None:
    model = LinearGaussianVAE.random(data_dim=6, latent_dim=2, seed=2)
    mask = torch.tensor([[True, False, True, False, True, False]])
    post = condition(model, torch.randn(1, 6), mask, method="fcn", steps=20)
    assert post.diagnostics["guaranteed_bound"] is False
    gvi = condition(model, torch.randn(1, 6), mask, method="gvi", steps=20)
    assert gvi.diagnostics["guaranteed_bound"] is True
