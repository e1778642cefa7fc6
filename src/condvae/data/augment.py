"""Augmentation for small image sets (Olivetti): random flips and small shifts."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to ``shift`` pixels (reflected borders)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
    return padded[..., shift + dy : shift + dy + h, shift + dx : shift + dx + w]
