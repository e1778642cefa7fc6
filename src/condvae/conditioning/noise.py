"""Per-query random streams, so that a query's answer does not depend on its batch mates.

Every query gets a 64-bit key hashed from (seed, its evidence, its mask). Noise is a pure
function of (key, counter, position): a splitmix64 hash (Steele et al. 2014) of the counter,
mapped to uniforms and then to standard normals by Box-Muller. Fitting query i alone or
inside any batch therefore draws exactly the same numbers for it, and the whole batch still
draws its noise in one vectorised call, with no Python loop over queries.
"""

from __future__ import annotations

import hashlib
import math

import torch

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shr(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (v >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(v: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser on int64 tensors (wrapping arithmetic)."""
    z = v + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def query_keys(x: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """One int64 key per query, a hash of (seed, x_i on its observed dims, mask_i)."""
    keys = []
    evidence = torch.where(mask, x, torch.zeros_like(x)).detach().cpu().float().contiguous()
    mask_bytes = mask.detach().cpu().contiguous()
    for i in range(x.shape[0]):  # once per call, not per step: hashing is cheap
        digest = hashlib.blake2b(digest_size=8)
        digest.update(int(seed).to_bytes(8, "little", signed=True))
        digest.update(evidence[i].numpy().tobytes())
        digest.update(mask_bytes[i].numpy().tobytes())
        keys.append(_signed(int.from_bytes(digest.digest(), "little")))
    return torch.tensor(keys, dtype=torch.int64)


def _uniform(bits: torch.Tensor) -> torch.Tensor:
    """int64 hashes -> float64 uniforms in (0, 1)."""
    return (_shr(bits, 11).double() + 0.5) / float(1 << 53)


def counter_normal(
    keys: torch.Tensor, counter: int, shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Standard normals ``[*shape[:-1]..., B, d]``-style: shape is (n, B, d) with B = len(keys).

    Draw ``counter`` of the stream of each query: a deterministic function of the query key.
    """
    n, batch, dim = shape
    if batch != keys.shape[0]:
        raise ValueError(f"shape[1]={batch} must equal the number of keys {keys.shape[0]}")
    keys = keys.to(device)
    position = torch.arange(n * dim, device=device, dtype=torch.int64).reshape(n, 1, dim)
    base = splitmix64(keys.reshape(1, batch, 1) ^ splitmix64(torch.tensor(counter, device=device)))
    h1 = splitmix64(base + 2 * position)
    h2 = splitmix64(base + 2 * position + 1)
    u1, u2 = _uniform(h1), _uniform(h2)
    normal = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return normal.float()


def reparameterize(dist: torch.distributions.Distribution, eps: torch.Tensor) -> torch.Tensor:
    """The draw of ``dist`` driven by standard normals ``eps`` ``[n, *batch, d]``.

    Gaussian (diagonal or full covariance) and any distribution with ``from_noise`` (the
    top-down chains of hierarchical VAEs): so a method drawing prior or proposal samples from
    its per-query noise works for every model's prior, not only N(0, I).
    """
    from torch.distributions import Independent, MultivariateNormal, Normal

    if isinstance(dist, MultivariateNormal):
        return dist.loc + (dist.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return dist.base_dist.loc + dist.base_dist.scale * eps
    from_noise = getattr(dist, "from_noise", None)
    if from_noise is None:
        raise TypeError(f"cannot draw a {type(dist).__name__} from standard normal noise")
    return from_noise(eps)
