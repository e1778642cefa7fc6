"""Every cross-coder's map T: shapes, gradients, invertibility, and log|det| against autograd."""

from __future__ import annotations

import pytest
import torch

from condvae import LinearGaussianVAE
from condvae.conditioning import METHODS, Query
from condvae.conditioning.variational import FlowPosterior

# Every push-forward cross-coder (the mixture is trained like them but is not one map of eps;
# semi is gvi's map started from a partial encoder, tested in test_partial.py).
FLOWS = sorted(
    name
    for name, cls in METHODS.items()
    if issubclass(cls, FlowPosterior) and name not in ("mixture", "semi")
)
INVERTIBLE = ["gvi", "spline"]


def _posterior(name: str, latent_dim: int = 3) -> FlowPosterior:
    torch.manual_seed(0)
    model = LinearGaussianVAE.random(data_dim=6, latent_dim=latent_dim, seed=2).requires_grad_(False)
    x = torch.randn(4, 6)
    mask = torch.rand(4, 6) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    post = METHODS[name](Query(model, x, mask))  # type: ignore[call-arg]
    # Move the parameters away from their (identity-like) initial values; float64 so that the
    # comparisons with autograd measure the maths, not float32 rounding.
    for key, value in list(vars(post).items()):
        if isinstance(value, torch.Tensor) and value.requires_grad:
            moved = value.detach().double() + 0.3 * torch.randn(value.shape, dtype=torch.float64)
            setattr(post, key, moved.requires_grad_(True))
    return post  # type: ignore[return-value]


def test_every_flow_is_covered() -> None:
    assert {"meanfield", "gvi", "planar", "fcn", "spline"} <= set(FLOWS)


@pytest.mark.parametrize("name", FLOWS)
def test_shapes_and_gradients(name: str) -> None:
    post = _posterior(name)
    eps = torch.randn(5, 4, 3, dtype=torch.float64)
    z, log_det = post.transform(eps)
    assert z.shape == (5, 4, 3) and log_det.shape == (5, 4)
    (z.sum() + log_det.sum()).backward()
    for p in post.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", FLOWS)
def test_log_det_matches_the_autograd_jacobian(name: str) -> None:
    post = _posterior(name)
    eps = torch.randn(2, 4, 3, dtype=torch.float64)
    _, log_det = post.transform(eps)
    for n in range(2):
        for b in range(4):

            def single(e: torch.Tensor, n: int = n, b: int = b) -> torch.Tensor:
                full = eps.clone()
                full[n, b] = e
                return post.transform(full)[0][n, b]

            jac = torch.autograd.functional.jacobian(single, eps[n, b])
            torch.testing.assert_close(log_det[n, b], torch.linalg.slogdet(jac)[1], atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_and_density(name: str) -> None:
    post = _posterior(name)
    eps = torch.randn(50, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        z, log_det = post.transform(eps)
        torch.testing.assert_close(post.inverse(z), eps, atol=1e-4, rtol=1e-4)
        expected = (
            -0.5 * (eps**2).sum(-1)
            - 1.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
            - log_det
        )
        torch.testing.assert_close(post.log_prob(z), expected, atol=1e-4, rtol=1e-4)


def test_queries_do_not_share_parameters() -> None:
    """The gradient of query 0's C-ELBO touches only query 0's slice of every parameter."""
    post = _posterior("spline")
    eps = torch.randn(3, 4, 3, dtype=torch.float64)
    z, log_det = post.transform(eps)
    (z[:, 0].sum() + log_det[:, 0].sum()).backward()
    for p in post.parameters():
        assert p.grad is not None and float(p.grad[1:].abs().sum()) == 0.0


def test_fcn_says_its_bound_is_not_guaranteed() -> None:
    from condvae.conditioning import condition

    model = LinearGaussianVAE.random(data_dim=6, latent_dim=2, seed=2)
    mask = torch.tensor([[True, False, True, False, True, False]])
    post = condition(model, torch.randn(1, 6), mask, method="fcn", steps=20)
    assert post.diagnostics["guaranteed_bound"] is False
    gvi = condition(model, torch.randn(1, 6), mask, method="gvi", steps=20)
    assert gvi.diagnostics["guaranteed_bound"] is True
