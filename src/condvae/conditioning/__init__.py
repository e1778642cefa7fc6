"""Per-query conditioning of a pretrained VAE: ``condition(vae, x, mask, method=...)``."""

from __future__ import annotations

from typing import Any

import torch

from condvae.conditioning import (  # noqa: F401  (registers the methods)
    ais,
    fcn,
    gaussian,
    grid,
    hmc,
    importance,
    mixture,
    planar,
    rejection,
    spline,
)
from condvae.conditioning.base import Posterior, Query, check_option_types
from condvae.conditioning.bdmc import Sandwich, sandwich, simulate
from condvae.conditioning.registry import METHODS, register
from condvae.conditioning.variational import frozen
from condvae.errors import CondVAEError
from condvae.models import VAE


def check_method(method: str, options: dict[str, Any]) -> type[Posterior]:
    """The registered class of ``method``, once its ``options`` are names it takes, of the right
    types; else a ``CondVAEError`` naming the argument (callers that validate before fitting)."""
    if not isinstance(method, str) or method not in METHODS:
        raise CondVAEError(f"method: unknown {method!r}; expected one of {sorted(METHODS)}")
    cls = METHODS[method]
    unknown = sorted(set(options) - set(cls.options()))
    if unknown:
        raise CondVAEError(f"options: {unknown} not known to method {method!r} (it takes {cls.options()})")
    check_option_types(cls, options)
    return cls


def condition(
    vae: VAE,
    x: torch.Tensor,
    mask: torch.Tensor,
    method: str = "auto",
    seed: int = 0,
    **options: Any,
) -> Posterior:
    """Approximate p(z | x_o) for a batch of B queries at once.

    ``x`` is ``[B, *data_shape]`` (values where ``mask`` is False are ignored and may be NaN),
    ``mask`` a bool tensor of the same shape, True = observed. ``options`` go to the method
    (e.g. ``steps``, ``samples``, ``lr``, ``layers``; ``help(condvae.METHODS[method])`` lists
    them). Query i's result depends only on its own evidence, mask and ``seed``, never on its
    batch mates. ``vae`` must follow the protocol of ``condvae.models.VAE``.
    """
    cls = check_method(method, options)
    query = Query(vae, x, mask, seed=seed)
    with frozen(vae), torch.enable_grad():  # fitting needs gradients even inside a caller's no_grad
        return cls.fit(query, **options)


__all__ = [
    "METHODS",
    "Posterior",
    "Query",
    "Sandwich",
    "check_method",
    "condition",
    "register",
    "sandwich",
    "simulate",
]
