"""The AIS/SMC sampler and the BDMC sandwich against exact answers (closed form, 2-d grid)."""

from __future__ import annotations

import pytest
import torch

from condvae import LinearGaussianVAE, condition, load
from condvae.conditioning import sandwich, simulate
from condvae.conditioning.ais import sigmoid_schedule
from condvae.errors import CondVAEError
from condvae.metrics import reference_query_log_likelihood


@pytest.fixture(scope="module")
def oracle() -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 3-d linear-Gaussian VAE on 8 dims, 16 items simulated from it, random masks."""
    model = LinearGaussianVAE.random(data_dim=8, latent_dim=3, noise=0.5, seed=1).requires_grad_(False)
    x, z = simulate(model, 16, seed=0)
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(16, 8, generator=gen) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    return model, x, mask, z


def test_the_schedule_runs_from_prior_to_posterior() -> None:
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 51
    assert bool((betas.diff() > 0).all())


@pytest.mark.parametrize("resample", [0.0, 0.5])
def test_ais_log_evidence_matches_the_closed_form(oracle, resample: float) -> None:  # type: ignore[no-untyped-def]
    model, x, mask, _ = oracle
    post = condition(model, x, mask, method="ais", particles=256, temperatures=200, resample=resample)
    error = post.log_evidence() - model.log_evidence(x, mask)
    assert float(error.abs().max()) < 0.2
    assert abs(float(error.mean())) < 0.05  # unbiased in p(x_o): no systematic error in the log
    if resample == 0:
        assert int(post.diagnostics.resamplings.sum()) == 0


def test_ais_samples_have_the_posterior_moments(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask, _ = oracle
    post = condition(model, x, mask, method="ais", particles=512, temperatures=150)
    z = post.sample(8000)
    exact = model.posterior(x, mask)
    std = exact.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    assert float(((z.mean(0) - exact.mean) / std).abs().max()) < 0.3
    centred = z - z.mean(0)
    cov = torch.einsum("nbi,nbj->bij", centred, centred) / (z.shape[0] - 1)
    cov_err = (cov - exact.covariance_matrix) / (std[:, :, None] * std[:, None, :])
    assert float(cov_err.abs().max()) < 0.3
    acceptance = post.diagnostics.acceptance_rate
    assert float((acceptance - 0.65).abs().max()) < 0.1  # the step sizes found their target


def test_rejuvenated_draws_are_distinct_points(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask, _ = oracle
    post = condition(model, x[:2], mask[:2], method="ais", particles=16, temperatures=20)
    assert post.sample(200)[:, 0].unique(dim=0).shape[0] > 100
    plain = condition(model, x[:2], mask[:2], method="ais", particles=16, temperatures=20, rejuvenate=0)
    assert plain.sample(200)[:, 0].unique(dim=0).shape[0] <= 16


def test_the_bdmc_sandwich_contains_the_true_evidence(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask, z = oracle
    truth = model.log_evidence(x, mask)
    bounds = sandwich(model, x, mask, z, particles=64, temperatures=400, chains=16)
    # Both bounds hold in expectation: averaged over 16 items the noise is a few hundredths.
    assert float((bounds.lower - truth).mean()) < 0.03
    assert float((bounds.upper - truth).mean()) > -0.03
    assert float(bounds.width.mean()) < 0.3  # a tight bracket on an easy posterior


def test_a_short_walk_widens_the_sandwich(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask, z = oracle
    short = sandwich(model, x, mask, z, particles=1, temperatures=3, chains=1)
    long = sandwich(model, x, mask, z, particles=64, temperatures=400, chains=16)
    assert float(short.width.mean()) > float(long.width.mean()) + 0.3


def test_ais_matches_the_grid_on_mnist_latent_2() -> None:
    """Sparse evidence on the bundled 2-d MNIST model: multimodal posteriors, exact on a grid."""
    vae = load("mnist-mlp-z2")
    x, _ = simulate(vae, 8, seed=3)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.05
    grid = condition(vae, x, mask, method="grid")
    ais = condition(vae, x, mask, method="ais", particles=256, temperatures=100)
    assert float((ais.log_evidence() - grid.log_evidence()).abs().max()) < 0.25
    gap = grid.exact_query_log_likelihood(x) - ais.query_log_likelihood(x, 4000)
    assert float(gap.mean()) < 0.3, gap


def test_the_bdmc_sandwich_brackets_the_grid_on_mnist_latent_2() -> None:
    """Both bounds against the exact grid value on a multimodal 2-d posterior: each holds in
    expectation, so averaged over 8 items they sit within Monte Carlo noise of the truth."""
    vae = load("mnist-mlp-z2")
    x, z = simulate(vae, 8, seed=3)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.05
    truth = condition(vae, x, mask, method="grid").log_evidence()
    bounds = sandwich(vae, x, mask, z, particles=64, temperatures=200, chains=16)
    assert float((bounds.lower - truth).mean()) < 0.05
    assert float((bounds.upper - truth).mean()) > -0.05
    assert float(bounds.width.mean()) < 0.1


def test_bad_options_are_refused_in_one_line(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask, z = oracle
    with pytest.raises(CondVAEError, match="resample: expected a fraction"):
        condition(model, x, mask, method="ais", resample=1.5)
    with pytest.raises(CondVAEError, match="temperatures: expected a positive integer"):
        condition(model, x, mask, method="ais", temperatures=0)
    with pytest.raises(CondVAEError, match=r"z: expected exact posterior draws \[B, 3\]"):
        sandwich(model, x, mask, z[:, :2])
    with pytest.raises(CondVAEError, match="z: expected one exact draw per query"):
        sandwich(model, x, mask, z[:3], temperatures=2, particles=2)


def test_the_ais_reference_matches_the_closed_form(oracle) -> None:  # type: ignore[no-untyped-def]
    """The metric's AIS reference of log p(y | x_o), asked for explicitly, against the closed
    form the default reference returns for this model."""
    model, x, mask, _ = oracle
    ais = reference_query_log_likelihood(model, x[:6], mask[:6], method="ais")
    exact = reference_query_log_likelihood(model, x[:6], mask[:6])
    assert (ais.method, exact.method) == ("ais", "closed form")
    error = ais.value - exact.value  # two estimates of 32 and 64 particles: a few hundredths each
    assert float(error.abs().max()) < 0.25 and abs(float(error.mean())) < 0.1, error
    with pytest.raises(CondVAEError, match="method: expected 'auto' or 'ais'"):
        reference_query_log_likelihood(model, x, mask, method="nuts")
