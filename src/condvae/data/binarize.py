"""Binarisation for Bernoulli models.

Training uses *dynamic* binarisation (a fresh Bernoulli draw of each grey pixel every time an
image is seen, as in Burda et al. 2016); evaluation uses one *fixed* seeded draw so that test
scores are reproducible across runs and machines.
"""

from __future__ import annotations

import numpy as np
import torch

EVAL_SEED = 0


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_bin ~ Bernoulli(x), elementwise; a new draw per call."""
    return torch.bernoulli(x, generator=generator)


def fixed_binarize(x: torch.Tensor, seed: int = EVAL_SEED) -> torch.Tensor:
    """One reproducible draw: ``u < x`` with ``u`` from numpy's PCG64 seeded by ``seed``.

    numpy's generator is used (not torch's) because its stream is fixed across versions and
    devices; the same test set always gets the same binarisation.
    """
    u = np.random.default_rng(seed).random(tuple(x.shape), dtype=np.float32)
    return (torch.from_numpy(u).to(x.device) < x).to(x.dtype)
