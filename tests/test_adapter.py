"""A user's own decoder through condvae.wrap: same answers as the built-in protocol."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

import condvae
from condvae import LinearGaussianVAE
from condvae.errors import CondVAEError


class LinearDecoder(nn.Module):
    """The oracle's decoder as a plain module returning a torch distribution."""

    def __init__(self, oracle: LinearGaussianVAE) -> None:
        super().__init__()
        self.oracle = oracle

    def forward(self, z: torch.Tensor) -> Normal:
        return Normal(z @ self.oracle.weight.T + self.oracle.bias, self.oracle.noise_scale())


def test_wrapped_distribution_decoder_matches_the_oracle() -> None:
    oracle = LinearGaussianVAE.random(data_dim=6, latent_dim=2, seed=4).requires_grad_(False)
    vae = condvae.wrap(LinearDecoder(oracle), latent_dim=2, data_shape=(6,), likelihood="gaussian")
    x = torch.randn(5, 6)
    mask = torch.rand(5, 6) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    z = torch.randn(3, 5, 2)
    torch.testing.assert_close(vae.log_likelihood(x, z, mask), oracle.log_likelihood(x, z, mask))
    grid = condvae.condition(vae, x, mask, method="grid")
    torch.testing.assert_close(grid.log_evidence(), oracle.log_evidence(x, mask), atol=2e-3, rtol=0)


def test_wrapped_tensor_decoder_and_encoder() -> None:
    decoder = nn.Sequential(nn.Linear(3, 20))  # flat logits for 1x4x5 images are reshaped
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(20, 6))

    class Encoder(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            loc, raw = encoder(x).chunk(2, -1)
            return loc, nn.functional.softplus(raw)

    vae = condvae.wrap(decoder, latent_dim=3, data_shape=(1, 4, 5), encoder=Encoder())
    x = torch.bernoulli(torch.full((2, 1, 4, 5), 0.5))
    assert vae.decode(torch.randn(7, 2, 3)).batch_shape == (7, 2, 1, 4, 5)
    assert vae.encode(x).event_shape == (3,)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :2, :] = True
    post = condvae.condition(vae, x, mask, method="importance", particles=100)
    assert post.sample(4).shape == (4, 2, 3)


def test_wrapped_errors() -> None:
    vae = condvae.wrap(nn.Linear(2, 7), latent_dim=2, data_shape=(1, 2, 3))
    with pytest.raises(CondVAEError, match=r"decoder: returned shape \[4, 7\], expected \[N, 1, 2, 3\]"):
        vae.decode(torch.randn(4, 2))
    good = condvae.wrap(nn.Linear(2, 6), latent_dim=2, data_shape=(6,))
    x, mask = torch.zeros(1, 6), torch.tensor([[True, False] * 3])
    with pytest.raises(CondVAEError, match="encoder: this wrapped model has none"):
        condvae.condition(good, x, mask, method="importance")
    assert condvae.condition(good, x, mask, method="importance", proposal="prior").sample(2).shape == (
        2,
        1,
        2,
    )
    with pytest.raises(CondVAEError, match="decoder: expected a torch.nn.Module"):
        condvae.wrap(lambda z: z, latent_dim=2, data_shape=(2,))  # type: ignore[arg-type]
    with pytest.raises(CondVAEError, match="save_pretrained: a wrapped user model"):
        condvae.save_pretrained(good, "/tmp/never-written")


def test_distribution_with_wrong_shape() -> None:
    decoder = nn.Sequential(nn.Linear(2, 5))

    class Dist(nn.Module):
        def forward(self, z: torch.Tensor) -> Independent:
            return Independent(Normal(decoder(z), 1.0), 1)

    vae = condvae.wrap(Dist(), latent_dim=2, data_shape=(5,), likelihood="gaussian")
    with pytest.raises(CondVAEError, match=r"decoder: returned a distribution with batch shape \[3\]"):
        vae.decode(torch.randn(3, 2))
