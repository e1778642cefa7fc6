"""Laplacian pyramid utilities: shapes, exact reconstruction, and clear errors."""

from __future__ import annotations

import pytest
import torch

from condvae.errors import CondVAEError
from condvae.pyramid import (
    blur,
    coarse_levels,
    downsample,
    gaussian_pyramid,
    laplacian_pyramid,
    reconstruct,
    upsample,
)


@pytest.mark.parametrize(("shape", "levels"), [((2, 1, 28, 28), 2), ((3, 3, 64, 48), 3), ((1, 3, 32, 32), 5)])
def test_reconstruction_is_exact_for_grey_and_rgb(shape: tuple[int, ...], levels: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen)
    pyramid = laplacian_pyramid(x, levels)
    assert len(pyramid) == levels + 1
    h, w = shape[-2:]
    assert pyramid[0].shape == (*shape[:2], h >> levels, w >> levels)  # the coarse image
    for k, level in enumerate(pyramid[1:], start=1):  # residuals, coarse to fine
        assert level.shape == (*shape[:2], h >> (levels - k), w >> (levels - k))
    torch.testing.assert_close(reconstruct(pyramid), x, atol=1e-6, rtol=0)
    x64 = x.double()
    assert float((reconstruct(laplacian_pyramid(x64, levels)) - x64).abs().max()) < 1e-12


def test_blur_and_resampling_keep_constants_and_the_mean() -> None:
    c = torch.full((1, 2, 16, 16), 0.37)
    torch.testing.assert_close(blur(c), c)
    torch.testing.assert_close(downsample(c), c[..., ::2, ::2])
    torch.testing.assert_close(upsample(c[..., ::2, ::2]), c)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    gauss = gaussian_pyramid(x, 3)
    assert [g.shape[-1] for g in gauss] == [32, 16, 8, 4]
    # the coarse image carries the mean; the band-pass residuals carry (almost) none of it
    assert abs(float(gauss[-1].mean() - x.mean())) < 0.01
    assert all(abs(float(r.mean())) < 0.01 for r in laplacian_pyramid(x, 3)[1:])


def test_residuals_are_band_pass_detail() -> None:
    """A smooth image leaves little in the finest residual; white noise leaves most of it there."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    smooth = torch.sin(3 * xx + 2 * yy)[None, None]
    noise = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    finest = [laplacian_pyramid(img, 2)[-1].pow(2).mean() / img.var() for img in (smooth, noise)]
    assert float(finest[0]) < 0.01 < 0.3 < float(finest[1])


def test_coarse_levels_drop_the_fine_detail_only() -> None:
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    pyramid = laplacian_pyramid(x, 3)
    torch.testing.assert_close(coarse_levels(pyramid, 4), reconstruct(pyramid))
    coarse = coarse_levels(pyramid, 1)
    assert coarse.shape == x.shape
    torch.testing.assert_close(coarse, upsample(upsample(upsample(pyramid[0]))))
    with pytest.raises(CondVAEError, match="keep: expected 1 to 4"):
        coarse_levels(pyramid, 0)


def test_bad_input_is_named() -> None:
    with pytest.raises(CondVAEError, match=r"28x28 is not divisible by 2\^3 = 8"):
        laplacian_pyramid(torch.rand(1, 1, 28, 28), 3)
    with pytest.raises(CondVAEError, match=r"expected images \[B, C, H, W\]"):
        laplacian_pyramid(torch.rand(28, 28), 1)
    with pytest.raises(CondVAEError, match="levels: expected a positive integer"):
        laplacian_pyramid(torch.rand(1, 1, 8, 8), 0)
    bad = torch.rand(1, 1, 8, 8)
    bad[0, 0, 1, 1] = float("nan")
    with pytest.raises(CondVAEError, match="NaN"):
        laplacian_pyramid(bad, 1)
    pyramid = laplacian_pyramid(torch.rand(1, 1, 16, 16), 2)
    with pytest.raises(CondVAEError, match="level 2 has shape"):
        reconstruct([pyramid[0], pyramid[1], pyramid[1]])


def test_reconstruction_rmse_and_finest_band_energy() -> None:
    from condvae.pyramid import blur
    from condvae.pyramid.metrics import finest_band_energy, reconstruction_rmse

    class Shifted:
        def __init__(self, by: float) -> None:
            self.by = by

        def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.by

    x = torch.rand(300, 1, 16, 16) * 0.8
    assert torch.equal(reconstruction_rmse(Shifted(0.0), x, batch_size=64), torch.zeros(300))
    torch.testing.assert_close(reconstruction_rmse(Shifted(0.1), x), torch.full((300,), 25.5))
    assert (reconstruction_rmse(Shifted(1.0), x) <= 255 * 1.0).all()  # reconstructions are clamped to [0, 1]
    assert torch.equal(finest_band_energy(torch.full((2, 1, 16, 16), 0.3)), torch.zeros(2))
    sharp, soft = finest_band_energy(x), finest_band_energy(blur(blur(x)))
    assert (soft < 0.2 * sharp).all()  # blurring removes most of the finest band
