"""Laplacian pyramids (Burt & Adelson 1983; Dorta et al. 2017): a coarse image plus band-pass residuals.

    G_0 = x,   G_{k+1} = down(G_k) = (blur * G_k)[::2, ::2],
    L_k = G_k - up(G_{k+1})  (k = 0 .. K-1),     up(g) = 4 * blur * (g with zeros inserted)

and the pyramid is [G_K, L_{K-1}, ..., L_0], coarsest first. Reconstruction runs the other way,
G_k = L_k + up(G_{k+1}), and is exact by construction (the same ``up`` is added back that was
subtracted), to float rounding. The blur is the 5-tap binomial kernel [1, 4, 6, 4, 1] / 16,
separable, per channel, with reflected borders, so grey and RGB images of any size divisible
by 2^K work alike; the batch and channel axes pass through.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch.nn import functional as F

from condvae.errors import CondVAEError

_TAPS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _check(x: torch.Tensor, levels: int, argument: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise CondVAEError(f"{argument}: expected images [B, C, H, W], got {getattr(x, 'shape', type(x))}")
    if not isinstance(levels, int) or levels < 1:
        raise CondVAEError(f"levels: expected a positive integer, got {levels!r}")
    height, width = x.shape[-2:]
    factor = 2**levels
    if height % factor or width % factor:
        raise CondVAEError(
            f"{argument}: image size {height}x{width} is not divisible by 2^{levels} = {factor}; "
            "pad or resize the images or use fewer levels"
        )
    if not torch.isfinite(x).all():
        raise CondVAEError(f"{argument}: contains NaN or infinite values")


def blur(x: torch.Tensor) -> torch.Tensor:
    """The separable binomial blur of every channel, reflected borders, same size."""
    channels = x.shape[1]
    taps = _TAPS.to(x)
    row = taps.view(1, 1, 1, 5).expand(channels, 1, 1, 5)
    col = taps.view(1, 1, 5, 1).expand(channels, 1, 5, 1)
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"  # reflect needs 3 pixels a side
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode=mode), row, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode=mode), col, groups=channels)


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Blur, then keep every second row and column: [B, C, H, W] -> [B, C, H/2, W/2]."""
    return blur(x)[..., ::2, ::2]


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Insert zeros, then blur with gain 4: [B, C, H, W] -> [B, C, 2H, 2W]."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return 4 * blur(up)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[G_0 = x, G_1, ..., G_K], finest first."""
    _check(x, levels)
    out = [x]
    for _ in range(levels):
        out.append(downsample(out[-1]))
    return out


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[G_K, L_{K-1}, ..., L_0], coarsest first: the coarse image then finer residuals."""
    gauss = gaussian_pyramid(x, levels)
    residuals = [g - upsample(coarser) for g, coarser in pairwise(gauss)]
    return [gauss[-1], *residuals[::-1]]


def reconstruct(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """The image from [G_K, L_{K-1}, ..., L_0]: G_k = L_k + up(G_{k+1})."""
    if len(pyramid) < 1:
        raise CondVAEError("pyramid: expected [coarse image, residuals...], got an empty list")
    image = pyramid[0]
    for k, residual in enumerate(pyramid[1:], start=1):
        if (
            residual.shape[-2:] != (2 * image.shape[-2], 2 * image.shape[-1])
            or residual.shape[:2] != image.shape[:2]
        ):
            raise CondVAEError(
                f"pyramid: level {k} has shape {list(residual.shape)}, expected "
                f"{[*image.shape[:2], 2 * image.shape[-2], 2 * image.shape[-1]]} (twice the level above)"
            )
        image = residual + upsample(image)
    return image


def coarse_levels(pyramid: list[torch.Tensor], keep: int) -> torch.Tensor:
    """The image of the ``keep`` coarsest entries only (the finer residuals set to zero),
    upsampled to full size: what a partial sample with those levels fixed shares."""
    if not 1 <= keep <= len(pyramid):
        raise CondVAEError(f"keep: expected 1 to {len(pyramid)} levels, got {keep}")
    return reconstruct([*pyramid[:keep], *[torch.zeros_like(r) for r in pyramid[keep:]]])
