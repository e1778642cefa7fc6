"""Laplacian-pyramid tools and models (paper 002, design.md §4.4)."""

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

__all__ = [
    "PyramidVAE",
    "ResidualLevel",
    "blur",
    "coarse_levels",
    "downsample",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "reconstruct",
    "upsample",
]
