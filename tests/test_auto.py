"""``method="auto"``, the default of ``condition``: what it chooses, why, and its answers."""

from __future__ import annotations

import inspect

import pytest
import torch

from condvae import LinearGaussianVAE, condition
from condvae.errors import CondVAEError
from condvae.partial.encoder import build_partial_encoder


def _oracle(latent_dim: int) -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor]:
    model = LinearGaussianVAE.random(data_dim=8, latent_dim=latent_dim, noise=0.5, seed=1).requires_grad_(
        False
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = model.decode(torch.randn(6, latent_dim, generator=gen)).mean
    mask = torch.rand(6, 8, generator=gen) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    return model, x, mask


def test_auto_is_the_default_of_condition() -> None:
    assert inspect.signature(condition).parameters["method"].default == "auto"
    model, x, mask = _oracle(3)
    assert condition(model, x, mask).diagnostics.method == "auto"


def test_a_2d_latent_gets_the_exact_grid() -> None:
    model, x, mask = _oracle(2)
    post = condition(model, x, mask)
    assert post.diagnostics.chosen == "grid" and "exact" in post.diagnostics.reason
    torch.testing.assert_close(post.log_evidence(), model.log_evidence(x, mask), atol=0.02, rtol=0)


def test_a_larger_latent_gets_gvi_checked_by_weights() -> None:
    model, x, mask = _oracle(4)
    post = condition(model, x, mask)
    d = post.diagnostics
    assert d.chosen == "gvi" and d.escalated == [] and "checked" in d.reason
    assert (
        d.effective_sample_size.shape == (6,) and float(d.effective_sample_size.min()) > 500
    )  # Gaussian target
    torch.testing.assert_close(post.log_evidence(), model.log_evidence(x, mask), atol=0.05, rtol=0)
    exact = model.posterior(x, mask)
    z = post.sample(4000)
    std = exact.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    assert float(((z.mean(0) - exact.mean) / std).abs().max()) < 0.15
    torch.testing.assert_close(post.log_prob(z[:5]), post.main.log_prob(z[:5]))  # its answer's density


def test_low_effective_sample_sizes_go_to_ais_and_get_its_exact_draws() -> None:
    model, x, mask = _oracle(3)
    post = condition(model, x, mask, escalate=0.999)  # flags queries whose fit is merely very good
    escalated, ess = post.diagnostics.escalated, post.diagnostics.effective_sample_size
    assert escalated == (ess < 0.999 * 1024).nonzero().flatten().tolist() and escalated
    assert "refitted by ais" in post.diagnostics.reason
    i = escalated[0]
    alone = condition(model, x[i : i + 1], mask[i : i + 1], method="ais", particles=128, temperatures=200)
    torch.testing.assert_close(post.sample(50)[:, i], alone.sample(50)[:, 0])
    torch.testing.assert_close(post.log_evidence()[i : i + 1], alone.log_evidence())
    with pytest.raises(CondVAEError, match="answered by ais"):
        post.log_prob(post.sample(2))


def test_a_tight_budget_falls_back_and_says_why() -> None:
    model, x, mask = _oracle(3)
    torch.manual_seed(0)
    encoder = build_partial_encoder(model).eval()
    post = condition(model, x, mask, budget=1e-9, encoder=encoder)
    assert post.diagnostics.chosen == "ipa"
    assert post.diagnostics.reason.startswith("budget 1e-09 s: gvi")
    alone = condition(model, x, mask, budget=1e-9)  # no partial encoder: the cheapest is still a fit
    assert alone.diagnostics.chosen == "gvi" and "used anyway" in alone.diagnostics.reason
    assert alone.diagnostics.options == {"steps": 100, "samples": 16}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget": 0}, "budget: expected a positive number of seconds"),
        ({"escalate": 1.0}, "escalate: expected"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    model, x, mask = _oracle(3)
    with pytest.raises(CondVAEError, match=message):
        condition(model, x, mask, **options)
