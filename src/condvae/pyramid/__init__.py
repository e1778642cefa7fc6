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

__all__ = [
    "blur",
    "coarse_levels",
    "downsample",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "reconstruct",
    "upsample",
]
