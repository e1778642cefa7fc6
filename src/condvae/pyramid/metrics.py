"""Image-quality figures for pyramids and plain VAEs (the comparison of Dorta et al. 2017).

- reconstruction error: sqrt(MSE) per image on the 0-255 scale between x and the model's
  reconstruction (decoder mean at the posterior mean, clamped to [0, 1]); the slides report
  20.60 (pyramid) against 22.78 (plain VAE) on 64x64 faces;
- sharpness: the mean energy (0-255 scale) of the finest Laplacian band L_0 = x - up(down(x)),
  for samples and for real images; blurry samples have a fraction of the real images' energy.
"""

from __future__ import annotations

from typing import Protocol

import torch

from condvae.pyramid.laplacian import laplacian_pyramid


class Reconstructs(Protocol):
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def reconstruction_rmse(model: Reconstructs, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """sqrt(mean over pixels of (255 (x - x_hat))^2) per image, ``[B]``; x in [0, 1]."""
    out = []
    for part in x.split(batch_size):
        rec = model.reconstruct(part).clamp(0, 1).to(part.device)
        out.append(((rec - part) * 255).pow(2).flatten(1).mean(1).sqrt())
    return torch.cat(out)


def finest_band_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean squared value of the finest Laplacian band on the 0-255 scale per image, ``[B]``."""
    return (laplacian_pyramid(images.clamp(0, 1) * 255, 1)[-1]).pow(2).flatten(1).mean(1)
