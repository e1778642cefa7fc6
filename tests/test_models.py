from __future__ import annotations

import math

import pytest
import torch

from condvae.errors import CheckpointError, CondVAEError
from condvae.models import (
    MLPVAE,
    VAE,
    ConvVAE,
    DiscretizedLogistic,
    LinearGaussianVAE,
    build_model,
)

MODELS = {
    "mlp-bernoulli": lambda: MLPVAE((1, 6, 5), latent_dim=3, hidden=[16, 8]),
    "mlp-gaussian": lambda: MLPVAE((7,), latent_dim=2, hidden=[8], likelihood="gaussian", activation="tanh"),
    "mlp-logistic": lambda: MLPVAE((1, 4, 4), latent_dim=2, hidden=[8], likelihood="logistic"),
    "conv-logistic": lambda: ConvVAE((1, 8, 12), latent_dim=4, channels=[4, 8], hidden=16),
    "conv-gaussian": lambda: ConvVAE((3, 8, 8), latent_dim=4, channels=[4], hidden=16, likelihood="gaussian"),
    "linear-gaussian": lambda: LinearGaussianVAE((6,), latent_dim=2),
}


def _data(model: VAE, n: int) -> torch.Tensor:
    x = torch.rand(n, *model.data_shape)
    if model.likelihood.name == "bernoulli":
        x = torch.bernoulli(x)
    elif model.likelihood.name == "logistic":
        x = torch.round(x * 255) / 255
    return x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_protocol_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    x = _data(model, 5)
    q = model.encode(x)
    assert q.batch_shape == (5,) and q.event_shape == (model.latent_dim,)
    z = q.rsample((3,))
    p = model.decode(z)
    assert p.batch_shape == (3, 5, *model.data_shape)  # one factor per data dimension
    assert model.prior.event_shape == (model.latent_dim,)
    assert model.log_likelihood(x, z).shape == (3, 5)
    mask = torch.rand(5, *model.data_shape) < 0.5
    partial = model.log_likelihood(x, z, mask)
    expected = (p.log_prob(x) * mask).flatten(2).sum(-1)
    torch.testing.assert_close(partial, expected)
    elbo, iwae = model.elbo(x), model.iwae(x, 50)
    assert elbo.shape == iwae.shape == (5,) and torch.isfinite(elbo).all()
    assert model.reconstruct(x).shape == x.shape and model.sample(4).shape == (4, *model.data_shape)
    (-elbo.mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_build_from_config_round_trip(name: str) -> None:
    model = MODELS[name]()
    clone = build_model(model.config())
    assert type(clone) is type(model) and clone.config() == model.config()
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_bernoulli_log_prob_matches_formula() -> None:
    torch.manual_seed(0)
    model = MLPVAE((4,), latent_dim=2, hidden=[5])
    z = torch.randn(3, 2)
    x = torch.bernoulli(torch.full((3, 4), 0.5))
    logits = model.decoder(z)
    expected = x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)
    torch.testing.assert_close(model.decode(z).log_prob(x), expected)


def test_discretized_logistic_is_normalised() -> None:
    loc = torch.tensor([0.0, 0.3, 0.5, 0.99, 1.0, 0.5])
    log_scale = torch.tensor([-2.0, -4.0, -7.0, -3.0, 0.0, 1.5])
    dist = DiscretizedLogistic(loc, log_scale)
    bins = torch.arange(256.0) / 255
    probs = dist.log_prob(bins[:, None].expand(256, 6)).exp().sum(0)
    torch.testing.assert_close(probs, torch.ones(6), atol=2e-4, rtol=0)
    samples = dist.sample((2000,))
    assert ((samples * 255).round() == samples * 255).all()
    assert abs(float(samples[:, 1].mean()) - 0.3) < 0.01


def test_gaussian_likelihood_scale_is_learned_and_floored() -> None:
    model = MLPVAE((3,), latent_dim=1, hidden=[4], likelihood="gaussian")
    with torch.no_grad():
        model.likelihood.log_scale.fill_(-20.0)
    assert float(model.decode(torch.zeros(1, 1)).stddev.detach().min()) == pytest.approx(1e-2)


def test_support_checks_name_the_argument() -> None:
    model = MODELS["mlp-bernoulli"]()
    x = torch.bernoulli(torch.rand(2, 1, 6, 5))
    model.check_x(x)
    with pytest.raises(CondVAEError, match=r"x: expected shape \[B, 1, 6, 5\], got \[2, 30\]"):
        model.check_x(x.flatten(1))
    with pytest.raises(CondVAEError, match="x: contains NaN"):
        model.check_x(torch.full_like(x, float("nan")))
    with pytest.raises(CondVAEError, match=r"values in \[0, 1\]"):
        model.check_x(x * 255)
    with pytest.raises(CondVAEError, match="binary values"):
        model.check_x(x * 0.5)
    gaussian = MODELS["mlp-gaussian"]()
    gaussian.check_x(torch.randn(2, 7) * 10)  # any real value is in a Gaussian's support
    with pytest.raises(CondVAEError, match="NaN or infinite"):
        gaussian.check_x(torch.tensor([[math.inf] * 7]))


def test_bad_settings_raise_clear_errors() -> None:
    with pytest.raises(CondVAEError, match="not divisible by 4"):
        ConvVAE((1, 30, 30), channels=[8, 16])
    with pytest.raises(CondVAEError, match="likelihood: unknown 'poisson'"):
        MLPVAE(likelihood="poisson")
    with pytest.raises(CondVAEError, match="latent_dim"):
        MLPVAE(latent_dim=0)
    with pytest.raises(CheckpointError, match="unknown architecture 'vq'"):
        build_model({"architecture": "vq"})
    with pytest.raises(CheckpointError, match="invalid settings"):
        build_model({"architecture": "mlp", "depth": 3})


def test_iwae_tightens_towards_exact_evidence() -> None:
    # With a deliberately poor encoder the ELBO is loose; the k-sample bound closes the gap.
    torch.manual_seed(0)
    model = LinearGaussianVAE.random(data_dim=5, latent_dim=2, seed=3)
    x = model.decode(torch.randn(4, 2)).sample()
    exact = model.log_evidence(x)
    q = model.posterior(x)
    wide = torch.distributions.MultivariateNormal(q.mean, 4 * q.covariance_matrix)
    z = wide.sample((20000,))
    log_w = model.log_likelihood(x, z) + model.prior.log_prob(z) - wide.log_prob(z)
    estimate = torch.logsumexp(log_w, 0) - math.log(20000)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)
