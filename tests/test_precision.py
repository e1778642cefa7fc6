"""Mixed precision for the decoder (``condvae.mixed_precision``): float32 out, close to float32.

Run here with bfloat16 autocast on the CPU, the same code path that CUDA takes."""

from __future__ import annotations

import pytest
import torch

import condvae
from condvae import condition, mixed_precision
from condvae.errors import CondVAEError
from condvae.models import build_model


def queries() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 1, 28, 28, generator=gen) > 0.8).float()
    return x, torch.rand(4, 1, 28, 28, generator=gen) < 0.3


@pytest.mark.parametrize(
    "config",
    [
        {"architecture": "mlp", "latent_dim": 4, "hidden": [64]},
        {"architecture": "conv", "latent_dim": 4},
        {"architecture": "hierarchical", "groups": [2, 2]},
    ],
)
def test_decoders_give_float32_close_to_float32(config: dict) -> None:
    torch.manual_seed(0)
    vae = build_model({**config, "data_shape": [1, 28, 28]}).eval()
    x, mask = queries()
    z = vae.prior.sample((8, 4))
    with torch.no_grad():
        exact = vae.decode(z).mean
        full = vae.log_likelihood(x, z, mask)
        with mixed_precision():
            mixed = vae.decode(z).mean
            half = vae.log_likelihood(x, z, mask)
    assert mixed.dtype == torch.float32 and half.dtype == torch.float32
    assert float((mixed - exact).abs().max()) < 0.03  # bfloat16 keeps 8 bits of mantissa
    assert float(((half - full) / full.abs()).abs().max()) < 0.02
    assert not torch.equal(half, full)  # the block did change the arithmetic


def test_a_fit_under_mixed_precision_is_as_good() -> None:
    vae = condvae.load("mnist-mlp-z2")
    x, mask = queries()
    exact = condition(vae, x, mask, method="gvi", steps=200)
    with mixed_precision():
        mixed = condition(vae, x, mask, method="gvi", steps=200)
    # both posteriors scored in float32: the one fitted with bfloat16 decoders is as good
    gap = (exact.c_elbo(2000) - mixed.c_elbo(2000)).abs()
    assert float(gap.max()) < 0.05, gap  # measured: at most 0.004 nat


def test_mixed_precision_refuses_other_types() -> None:
    with pytest.raises(CondVAEError, match="dtype: expected torch.bfloat16 or torch.float16"):
        with mixed_precision(torch.float64):
            pass
    vae = condvae.load("mnist-mlp-z2")
    with pytest.raises(CondVAEError, match="float16 autocast is for CUDA"), mixed_precision(torch.float16):
        vae.decode(torch.zeros(1, 2))
