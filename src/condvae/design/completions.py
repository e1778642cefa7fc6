"""Where design's completions x_hat_1..x_hat_N of the current evidence come from.

- ``MethodCompletions``: draws z ~ q(z | x_o) from any conditioning method (``ipa``, ``ipa-r``,
  ``gvi``, ``mixture``, ...), decoded and with the evidence pasted back;
- ``UnconditionalCompletions``: random training items, ignoring the evidence (the baseline that
  shows what conditioning buys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from condvae.conditioning import condition
from condvae.errors import CondVAEError
from condvae.models import VAE
from condvae.streams import generator, seed_for


@dataclass
class Completions:
    """``fill`` ``[B, N, *data_shape]`` (evidence pasted in) and, when a method made them, the
    latents ``z`` ``[N, B, latent_dim]`` they were decoded from."""

    fill: torch.Tensor
    z: torch.Tensor | None


def method_and_options(name: str, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """``ipa-r`` is ``ipa`` with the reverse-KL encoder; every other name is a method's own."""
    options = dict(options or {})
    if name == "ipa-r":
        return "ipa", {"objective": "reverse", **options}
    return name, options


class MethodCompletions:
    """Completions from a conditioning method, refitted to each step's evidence."""

    def __init__(self, vae: VAE, method: str, seed: int = 0, options: dict[str, Any] | None = None) -> None:
        self.vae, self.name, self.seed = vae, method, seed
        self.method, self.options = method_and_options(method, options)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, mask: torch.Tensor, n: int, decoded: str, step: int) -> Completions:
        b = x.shape[0]
        open_ = ~mask.flatten(1).all(1)  # an item seen whole has nothing left to complete
        fill = x[:, None].expand(b, n, *x.shape[1:]).clone()
        z = torch.zeros(n, b, self.vae.latent_dim, device=x.device)
        if bool(open_.any()):
            post = condition(
                self.vae,
                x[open_],
                mask[open_],
                self.method,
                seed=seed_for(self.seed, "design/complete", step),
                **self.options,
            )
            z_open = post.sample(n)
            p = self.vae.decode(z_open)
            y = p.mean if decoded == "mean" else p.sample()
            fill[open_] = torch.where(mask[open_], x[open_], y).transpose(0, 1)
            z[:, open_] = z_open
        return Completions(fill, z)


class UnconditionalCompletions:
    """N random items of ``pool`` (training data) per query, the evidence pasted over them."""

    name = "unconditional"

    def __init__(self, pool: torch.Tensor, seed: int = 0) -> None:
        if len(pool) == 0:
            raise CondVAEError("train: the unconditional strategy needs training items to draw from")
        self.pool, self.seed = pool, seed

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, mask: torch.Tensor, n: int, decoded: str, step: int) -> Completions:
        pick = torch.randint(
            len(self.pool), (x.shape[0], n), generator=generator(self.seed, "design/pool", step)
        )
        fill = self.pool.to(x.device)[pick.to(x.device)]
        return Completions(torch.where(mask[:, None], x[:, None], fill), None)
