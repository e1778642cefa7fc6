"""The oracle's closed forms against brute-force numerical integration over z."""

from __future__ import annotations

import math

import pytest
import torch

from condvae.models import LinearGaussianVAE


def grid_integrate(model: LinearGaussianVAE, x: torch.Tensor, mask: torch.Tensor, n: int = 1201):
    """log p(x_o), E[z | x_o], Cov[z | x_o] by summing p(z) p(x_o | z) over a fine grid (d <= 2)."""
    d = model.latent_dim
    axis = torch.linspace(-7, 7, n, dtype=torch.float64)
    z = torch.cartesian_prod(*([axis] * d)).reshape(-1, d) if d > 1 else axis[:, None]
    cell = (axis[1] - axis[0]) ** d
    model = model.double()
    log_joint = model.prior.log_prob(z) + model.log_likelihood(x.double()[None], z, mask[None])
    log_evidence = torch.logsumexp(log_joint, 0) + math.log(cell)
    w = torch.softmax(log_joint, 0)
    mean = w @ z
    cov = (z - mean).T @ ((z - mean) * w[:, None])
    return log_evidence, mean, cov


@pytest.mark.parametrize("latent_dim", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_closed_forms_match_numerical_integration(latent_dim: int, seed: int) -> None:
    model = LinearGaussianVAE.random(data_dim=4, latent_dim=latent_dim, noise=0.6, seed=seed).double()
    gen = torch.Generator().manual_seed(seed + 10)
    x = model.decode(torch.randn(1, latent_dim, generator=gen, dtype=torch.float64)).mean
    x = x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    masks = [
        torch.tensor([[True, False, True, False]]),
        torch.tensor([[False, False, False, True]]),
        torch.tensor([[True, True, True, True]]),
    ]
    with torch.no_grad():
        for mask in masks:
            log_ev, mean, cov = grid_integrate(model, x[0], mask[0])
            post = model.posterior(x, mask)
            torch.testing.assert_close(model.log_evidence(x, mask)[0], log_ev, atol=1e-6, rtol=0)
            torch.testing.assert_close(post.mean[0], mean, atol=1e-6, rtol=0)
            torch.testing.assert_close(post.covariance_matrix[0], cov, atol=1e-6, rtol=0)
            # p(x_u | x_o): mean b_u + W_u E[z], covariance W_u Cov[z] W_u^T + diag(sigma_u^2).
            c_mean, c_cov = model.conditional(x, mask)
            u = ~mask[0]
            w_u, sigma = model.weight[u], model.noise_scale()[u]
            torch.testing.assert_close(c_mean[0][u], model.bias[u] + w_u @ mean, atol=1e-6, rtol=0)
            torch.testing.assert_close(c_mean[0][~u], x[0][~u])
            expected_cov = w_u @ cov @ w_u.T + torch.diag(sigma**2)
            torch.testing.assert_close(c_cov[0][u][:, u], expected_cov, atol=1e-6, rtol=0)
            assert float(c_cov[0][~u].abs().sum()) == 0.0


def test_batched_masks_and_limits() -> None:
    model = LinearGaussianVAE.random(data_dim=6, latent_dim=3, seed=2).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    mask = torch.rand(5, 6) < 0.5
    mask[0] = False  # nothing observed: the posterior is the prior and log p(x_o) = 0
    with torch.no_grad():
        batched = model.log_evidence(x, mask)
        one_by_one = torch.cat([model.log_evidence(x[i : i + 1], mask[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(batched, one_by_one)
        assert float(batched[0]) == 0.0
        post = model.posterior(x, mask)
        torch.testing.assert_close(post.mean[0], torch.zeros(3, dtype=torch.float64))
        torch.testing.assert_close(post.covariance_matrix[0], torch.eye(3, dtype=torch.float64))
        # Full evidence: the marginal N(b, W W^T + diag sigma^2) directly.
        marginal = torch.distributions.MultivariateNormal(
            model.bias, model.weight @ model.weight.T + torch.diag(model.noise_scale() ** 2)
        )
        torch.testing.assert_close(model.log_evidence(x), marginal.log_prob(x))
        # log p(y | x_o) = log p(x) - log p(x_o) equals the Gaussian conditional density of y.
        i = 1
        c_mean, c_cov = model.conditional(x[i : i + 1], mask[i : i + 1])
        u = ~mask[i]
        cond = torch.distributions.MultivariateNormal(c_mean[0][u], c_cov[0][u][:, u])
        torch.testing.assert_close(
            model.query_log_likelihood(x[i : i + 1], mask[i : i + 1])[0], cond.log_prob(x[i][u])
        )


def test_elbo_of_exact_encoder_is_log_evidence() -> None:
    model = LinearGaussianVAE.random(data_dim=5, latent_dim=2, seed=4)
    x = torch.randn(8, 5)
    with torch.no_grad():
        torch.testing.assert_close(model.elbo(x, samples=1), model.log_evidence(x), atol=1e-4, rtol=0)
