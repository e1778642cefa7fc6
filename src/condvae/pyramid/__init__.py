"""Laplacian pyramids: the image transform, the pyramid of conditional VAEs and its store kind."""

from condvae.pyramid.laplacian import (
    blur,
    coarse_levels,
    downsample,
    gaussian_pyramid,
    laplacian_pyramid,
    reconstruct,
    upsample,
)
from condvae.pyramid.model import PyramidVAE, ResidualLevel
from condvae.pyramid.pretrained import PYRAMIDS, load_pyramid

__all__ = [
    "PYRAMIDS",
    "PyramidVAE",
    "ResidualLevel",
    "blur",
    "coarse_levels",
    "downsample",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "load_pyramid",
    "reconstruct",
    "upsample",
]
