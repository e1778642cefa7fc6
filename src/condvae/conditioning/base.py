"""The one interface: a ``Posterior`` over z for a batch of B independent queries.

A query is an item ``x`` and a ``mask`` (True = observed, the evidence x_o); the rest is the
query y = x_u. Every method approximates p(z | x_o) ∝ p(z) p(x_o | z), with
``log p(x_o | z) = sum_d m_d log p(x_d | z)`` (the likelihood factorises over dimensions),
and answers with samples of z, completions of x, and the metrics of design.md §6:

    C-ELBO(q)       = E_q[ log p(x_o, z) - log q(z) ]  <= log p(x_o)     (paper 001, eq. 6)
    query log-lik   = log (1/M) sum_m p(y_true | z_m),  z_m ~ q            (paper 001, §4.3)

Methods are registered by name (``@register("gvi")``); ``condvae.condition`` looks them up,
checks the options against the method's ``fit`` signature and returns its Posterior.
"""

from __future__ import annotations

import abc
import functools
import math
import time
from typing import Any, ClassVar

import torch

from condvae.conditioning.noise import counter_normal, query_keys
from condvae.errors import CondVAEError
from condvae.models import VAE

SAMPLE_COUNTER = 1 << 40  # sampling streams start here, far from the fitting steps


class Query:
    """A validated batch of queries: ``x`` [B, *data_shape] (0 where unobserved), bool ``mask``."""

    def __init__(self, vae: VAE, x: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> None:
        if not isinstance(x, torch.Tensor):
            raise CondVAEError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if not isinstance(mask, torch.Tensor):
            raise CondVAEError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
        shape = vae.data_shape
        if tuple(x.shape) == shape:  # a single query
            x = x.unsqueeze(0)
        if tuple(mask.shape) == shape:
            mask = mask.unsqueeze(0).expand(x.shape[0], *shape)
        if tuple(x.shape[1:]) != shape:
            raise CondVAEError(f"x: expected shape [B, {', '.join(map(str, shape))}], got {list(x.shape)}")
        if mask.shape != x.shape:
            raise CondVAEError(f"mask: expected the shape of x {list(x.shape)}, got {list(mask.shape)}")
        if mask.dtype != torch.bool:
            if not ((mask == 0) | (mask == 1)).all():
                raise CondVAEError("mask: expected booleans (or 0/1 values), True = observed")
            mask = mask.bool()
        device = vae.device
        x, mask = x.to(device=device, dtype=torch.float32), mask.to(device)
        observed = mask.flatten(1).sum(1)
        full = (observed == mask[0].numel()).nonzero().flatten()
        if len(full):
            raise CondVAEError(
                f"mask: query {int(full[0])} observes every dimension; there is nothing to complete"
            )
        if torch.isnan(x[mask]).any():
            bad = int(torch.isnan(x).logical_and(mask).flatten(1).any(1).nonzero()[0])
            raise CondVAEError(f"x: query {bad} has NaN values in its evidence (observed dims)")
        x = torch.where(mask, x, torch.zeros_like(x))  # unobserved values never enter a method
        vae.likelihood.check_support(x[mask], "x")
        self.vae, self.x, self.mask, self.seed = vae, x, mask, seed
        self.keys = query_keys(x, mask, seed)
        self.prior_only = observed == 0

    @functools.cached_property
    def prepared(self) -> Any:
        """The model's fast path for this evidence, if any; built on first use (methods that
        never evaluate the decoder, like ``ipa``, never pay for it)."""
        with torch.no_grad():
            return self.vae.prepare(self.x, self.mask)

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.vae.latent_dim

    def noise(self, counter: int, n: int) -> torch.Tensor:
        """Standard normals [n, B, d], a function of each query's key and ``counter``."""
        return counter_normal(self.keys, counter, (n, self.batch, self.latent_dim), self.vae.device)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x_o, z) = log p(z) + sum_d m_d log p(x_d | z), shape ``z.shape[:-1]``."""
        return self.vae.prior.log_prob(z) + self.vae.log_likelihood(self.x, z, self.mask, self.prepared)


class Posterior(abc.ABC):
    """An approximation q(z) of p(z | x_o) for each of B queries."""

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False  # samples are exact draws from p(z | x_o)

    def __init__(self, query: Query) -> None:
        self.query = query
        self.diagnostics: dict[str, Any] = {"method": self.name}
        if bool(query.prior_only.any()):
            self.diagnostics["note"] = "some queries observe nothing: their posterior is the prior"
        self._draws = 0

    @classmethod
    def fit(cls, query: Query, **options: Any) -> Posterior:
        """Build the posterior for ``query`` (options are the constructor's) and run it."""
        post = cls(query, **options)
        with Timer() as timer, torch.no_grad():
            post.run()
        post.diagnostics["seconds"] = timer.seconds
        return post

    def run(self) -> None:  # noqa: B027 (an optional hook, not an abstract method)
        """The method's work at fit time (sampling, tabulating, finding a bound); none by default."""

    # -- sampling ------------------------------------------------------------------------
    def _next_counter(self) -> int:
        self._draws += 1
        return SAMPLE_COUNTER + self._draws

    @abc.abstractmethod
    def sample(self, n: int) -> torch.Tensor:
        """n latent samples per query, ``[n, B, latent_dim]``."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) at arbitrary z, ``z.shape[:-1]`` (methods with an invertible density)."""
        raise CondVAEError(f"method {self.name!r} cannot score arbitrary z (no inverse)")

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log q(z), ``[n, B, d]`` and ``[n, B]`` (methods with a density)."""
        raise CondVAEError(f"method {self.name!r} gives samples without a density (no C-ELBO)")

    @property
    def has_density(self) -> bool:
        return type(self).sample_and_log_prob is not Posterior.sample_and_log_prob

    @torch.no_grad()
    def complete(self, n: int, mean: bool = False) -> torch.Tensor:
        """n completions per query with the evidence pasted back, ``[n, B, *data_shape]``.

        y ~ p(y | z) with z ~ q (``mean=True``: the decoder's mean instead of a draw).
        """
        _check_n(n)
        p = self.query.vae.decode(self.sample(n))
        y = p.mean if mean else p.sample()
        return torch.where(self.query.mask, self.query.x, y)

    @torch.no_grad()
    def c_elbo(self, n: int = 500) -> torch.Tensor:
        """Monte Carlo C-ELBO per query, ``[B]``: mean over n draws of log p(x_o, z) - log q(z)."""
        _check_n(n)
        z, log_q = self.sample_and_log_prob(n)
        return (self.query.log_joint(z) - log_q).mean(0)

    @torch.no_grad()
    def query_log_likelihood(self, x_true: torch.Tensor, n: int = 500) -> torch.Tensor:
        """log (1/n) sum_m p(y_true | z_m), z_m ~ q: paper 001's query marginal likelihood, ``[B]``."""
        _check_n(n)
        x_true = x_true.to(self.query.x.device, torch.float32).reshape(self.query.x.shape)
        y_mask = ~self.query.mask
        self.query.vae.likelihood.check_support(x_true[y_mask], "x_true")
        ll = self.query.vae.log_likelihood(x_true, self.sample(n), y_mask)
        return torch.logsumexp(ll, 0) - math.log(n)


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise CondVAEError(f"n: expected a positive number of samples, got {n!r}")


class Timer:
    """Wall time of a fit, recorded in the diagnostics."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
