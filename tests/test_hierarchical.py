"""The top-down hierarchical VAE: its densities agree with each other and it round-trips."""

from __future__ import annotations

import math
from pathlib import Path

import torch

import condvae
from condvae.models import HierarchicalVAE
from condvae.models.hierarchical import gaussian_head


def _model() -> HierarchicalVAE:
    torch.manual_seed(0)
    vae = HierarchicalVAE((1, 6, 6), groups=[2, 3, 4], hidden=[32, 16], state=16)
    with torch.no_grad():  # move the prior away from N(0, I) so that the chain matters
        for p in [*vae.prior_heads.parameters(), *vae.steps.parameters(), vae.top]:
            p.add_(0.1 * torch.randn_like(p))
    return vae


def test_analytic_kl_elbo_matches_the_monte_carlo_elbo() -> None:
    """The per-group analytic KL is an unbiased rearrangement of E_q[log p(z) - log q(z)]: both
    estimates agree within four standard errors of the Monte Carlo one."""
    vae = _model()
    x = torch.rand(3, 1, 6, 6).round()
    torch.manual_seed(1)
    with torch.no_grad():
        analytic = vae.elbo(x, samples=20000)
        q = vae.encode(x)
        z = q.rsample((20000,))
        terms = vae.log_likelihood(x, z) + vae.prior.log_prob(z) - q.log_prob(z)
    standard_error = terms.std(0) / math.sqrt(terms.shape[0])
    assert ((analytic - terms.mean(0)).abs() < 4 * standard_error + 0.02).all(), (analytic, terms.mean(0))
    assert float(standard_error.max()) < 0.05  # and the test is sharp enough to catch a real error


def test_chain_density_is_the_change_of_variables_of_its_noise() -> None:
    """log r(T(eps)) = log N(eps) - sum_groups sum log sigma_l(s_{l-1}) along the chain."""
    vae = _model()
    prior = vae.prior
    eps = torch.randn(7, vae.latent_dim)
    with torch.no_grad():
        z = prior.from_noise(eps)
        states = vae.states(z)
        log_scale = sum(
            gaussian_head(vae.prior_heads[g](states[g]))[1].log().sum(-1) for g in range(len(vae.groups))
        )
        expected = -0.5 * (eps**2).sum(-1) - 0.5 * vae.latent_dim * math.log(2 * math.pi) - log_scale
        torch.testing.assert_close(prior.log_prob(z), expected, atol=1e-4, rtol=1e-5)


def test_iwae_tightens_the_elbo_and_the_model_round_trips(tmp_path: Path) -> None:
    vae = _model()
    x = torch.rand(4, 1, 6, 6).round()
    torch.manual_seed(2)
    with torch.no_grad():
        assert (vae.iwae(x, 2000) >= vae.elbo(x, samples=2000) - 0.05).all()
    condvae.save_pretrained(vae, tmp_path / "h")
    back = condvae.from_pretrained(tmp_path / "h")
    assert isinstance(back, HierarchicalVAE) and back.groups == [2, 3, 4]
    z = torch.randn(5, 9)
    torch.testing.assert_close(back.decode(z).logits, vae.decode(z).logits)
    torch.testing.assert_close(back.prior.log_prob(z), vae.prior.log_prob(z))
