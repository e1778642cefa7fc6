"""Named random streams: every use of randomness draws from a stream derived from its name.

A stream is a pure function of (key, name, kind, index, position): a splitmix64 hash (Steele,
Lea & Flood, "Fast splittable pseudorandom number generators", 2014) of the per-query key
mixed with a 64-bit digest of the name. Two names never share numbers (their digests differ),
normal, uniform and categorical draws of one name never share numbers (the kind is part of
the digest), and ``index`` (a step, a sampling call) selects a fresh block of the stream.

- ``Stream``: per-query draws for a batch of B queries. Each query's key is hashed from
  (seed, its evidence, its mask), so query i draws the same numbers alone or in any batch,
  and the whole batch still draws in one vectorised call.
- ``seed_for`` / ``generator``: a ``torch.Generator`` seed for a named use in a training
  loop, e.g. ``generator(cfg.seed, "train/order", epoch)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator

import torch

_MASK64 = (1 << 64) - 1
Index = int | tuple[int, ...]  # a block of a stream: a step, a sampling call, (call, round) ...


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


def _digest(*parts: object) -> int:
    """A signed 64-bit digest of the parts' text (stable across runs and machines)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return _signed(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))


def seed_for(seed: int, name: str, *index: int) -> int:
    """A non-negative 63-bit seed for the named use ``name`` at ``index`` of a run seeded ``seed``."""
    return _digest(int(seed), name, *index) & ((1 << 63) - 1)


def generator(seed: int, name: str, *index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`seed_for`."""
    return torch.Generator().manual_seed(seed_for(seed, name, *index))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Within the block the global RNGs that ``device`` draws from (the CPU's, and its own where
    torch keeps one per device, as for CUDA) are seeded with ``seed``; afterwards they are as
    before, so that a score under a fixed seed leaves the caller's random state untouched."""
    module = getattr(torch, device.type, None)
    own = device.type != "cpu" and callable(getattr(module, "get_rng_state", None))
    with torch.random.fork_rng(devices=[device] if own else [], device_type=device.type if own else "cuda"):
        torch.manual_seed(seed)
        yield


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


class Stream:
    """The draws of one named stream for B queries with keys ``keys`` [B]."""

    def __init__(self, keys: torch.Tensor, name: str, device: torch.device | str = "cpu") -> None:
        self.keys, self.name, self.device = keys.to(device), name, torch.device(device)

    def _bits(self, kind: str, index: Index, n: int, k: int) -> torch.Tensor:
        """Hashes ``[n, B, k]``, a pure function of (key, name, kind, index, position)."""
        index = (index,) if isinstance(index, int) else index
        salt = torch.tensor(_digest(self.name, kind, *map(int, index)), device=self.device)
        base = splitmix64(self.keys.reshape(1, -1, 1) ^ splitmix64(salt))
        position = torch.arange(n * k, device=self.device, dtype=torch.int64).reshape(n, 1, k)
        return splitmix64(base + position)

    def _uniforms(self, kind: str, index: Index, n: int, k: int) -> torch.Tensor:
        # Rounding to float32 could reach 1.0; callers rely on the open interval.
        return _uniform(self._bits(kind, index, n, k)).float().clamp_max(1 - 2**-24)

    def uniform(self, n: int, k: int | None = None, index: Index = 0) -> torch.Tensor:
        """Uniforms in (0, 1), ``[n, B]`` (or ``[n, B, k]``), float32."""
        u = self._uniforms("uniform", index, n, k or 1)
        return u if k is not None else u[..., 0]

    def normal(self, n: int, k: int, index: Index = 0) -> torch.Tensor:
        """Standard normals ``[n, B, k]`` by Box-Muller, float32."""
        bits = self._bits("normal", index, n, 2 * k)
        u1, u2 = _uniform(bits[..., :k]), _uniform(bits[..., k:])
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()

    def categorical(self, probs: torch.Tensor, n: int, index: Index = 0) -> torch.Tensor:
        """n indices per query drawn with (unnormalised) probabilities ``probs`` [B, K], ``[n, B]``.

        Inverse-CDF: the index of the first cumulative weight above u * total.
        """
        cdf = torch.cumsum(probs, -1).contiguous()
        u = self._uniforms("categorical", index, n, 1)[..., 0].to(cdf.dtype).T.contiguous() * cdf[:, -1:]
        return torch.searchsorted(cdf, u).clamp_max(probs.shape[-1] - 1).T
