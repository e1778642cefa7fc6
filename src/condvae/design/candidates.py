"""What can be observed next: a grid of square patches of an image, or single features of a table.

A candidate is a set of entries of x (all channels of its pixels). ``Candidates`` keeps them as
bool masks ``[C, *data_shape]`` and as flat indices ``[C, K]`` padded with D, the form the
batched information-gain estimators gather with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from condvae.errors import CondVAEError


@dataclass
class Candidates:
    """``masks`` ``[C, *data_shape]`` (True = the entries candidate c reveals), ``indices`` ``[C, K]``
    (flat, padded with D), ``names`` (one label per candidate) and ``costs`` ``[C]`` (positive)."""

    masks: torch.Tensor
    indices: torch.Tensor
    names: list[str]
    costs: torch.Tensor

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def to(self, device: torch.device | str) -> Candidates:
        return Candidates(self.masks.to(device), self.indices.to(device), self.names, self.costs.to(device))


def from_masks(masks: torch.Tensor, names: list[str], costs: torch.Tensor | None = None) -> Candidates:
    """Candidates from their bool masks ``[C, *data_shape]``; ``costs`` default to 1 each."""
    flat = masks.reshape(len(masks), -1)
    dim, width = flat.shape[1], int(flat.sum(1).max())
    # stable sort puts each candidate's entries first, in order; the rest become the pad index D
    order = torch.sort((~flat).to(torch.int8), dim=1, stable=True).indices[:, :width]
    indices = torch.where(flat.gather(1, order), order, torch.full_like(order, dim))
    if costs is None:
        costs = torch.ones(len(masks))
    costs = torch.as_tensor(costs, dtype=torch.float32).flatten()
    if costs.shape != (len(masks),):
        raise CondVAEError(f"costs: expected {len(masks)} costs (one per candidate), got {costs.numel()}")
    if not bool(torch.isfinite(costs).all() and (costs > 0).all()):
        raise CondVAEError(f"costs: expected positive finite costs, got {costs.tolist()}")
    return Candidates(masks, indices, names, costs)


def patch_grid(data_shape: tuple[int, ...], patch: int, costs: torch.Tensor | None = None) -> Candidates:
    """Square ``patch`` x ``patch`` glimpses tiling the image, row by row.

    Where the side is not a multiple of ``patch`` the last row (column) of patches ends at the
    border, overlapping its neighbour, so that every candidate reveals as many pixels.
    """
    if len(data_shape) != 3:
        raise CondVAEError(
            f"patch: glimpses need image data (C, H, W), this model's data is {tuple(data_shape)}"
        )
    _, height, width = data_shape
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise CondVAEError(f"patch: expected a positive number of pixels, got {patch!r}")
    if patch > min(height, width):
        raise CondVAEError(f"patch: {patch} is larger than the {height}x{width} image")
    tops = [min(r * patch, height - patch) for r in range(math.ceil(height / patch))]
    lefts = [min(c * patch, width - patch) for c in range(math.ceil(width / patch))]
    masks = torch.zeros(len(tops) * len(lefts), *data_shape, dtype=torch.bool)
    names = []
    for i, top in enumerate(tops):
        for j, left in enumerate(lefts):
            masks[i * len(lefts) + j, :, top : top + patch, left : left + patch] = True
            names.append(f"rows {top}-{top + patch - 1}, cols {left}-{left + patch - 1}")
    return from_masks(masks, names, costs)


def grid_shape(data_shape: tuple[int, ...], patch: int) -> tuple[int, int]:
    """Rows and columns of the patch grid (for drawing heat maps)."""
    return math.ceil(data_shape[1] / patch), math.ceil(data_shape[2] / patch)


def features(
    columns: list[str], exclude: list[str] | None = None, costs: torch.Tensor | None = None
) -> Candidates:
    """One candidate per feature of a table, leaving out ``exclude`` (the target, say)."""
    keep = [j for j, name in enumerate(columns) if name not in set(exclude or [])]
    masks = torch.zeros(len(keep), len(columns), dtype=torch.bool)
    masks[torch.arange(len(keep)), torch.tensor(keep, dtype=torch.long)] = True
    return from_masks(masks, [columns[j] for j in keep], costs)
