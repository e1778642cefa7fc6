"""The one interface: a ``Posterior`` over z for a batch of B independent queries.

A query is an item ``x`` and a ``mask`` (True = observed, the evidence x_o); the rest is the
query y = x_u. Every method approximates p(z | x_o) ∝ p(z) p(x_o | z), with
``log p(x_o | z) = sum_d m_d log p(x_d | z)`` (the likelihood factorises over dimensions),
and answers with samples of z, completions of x and two metrics (Wu, Domke & Sanner,
"Conditional Inference in Pre-trained Variational Autoencoders via Cross-coding", 2018):

    C-ELBO(q)       = E_q[ log p(x_o, z) - log q(z) ]  <= log p(x_o)
    query log-lik   = log (1/M) sum_m p(y_true | z_m),  z_m ~ q

Methods are registered by name (``@register("gvi")``); every option is a keyword argument of
the method's constructor, and ``condvae.condition`` builds the method and runs its fit.
"""

from __future__ import annotations

import abc
import collections.abc
import dataclasses
import functools
import inspect
import math
import time
import types
import typing
from typing import Any, ClassVar

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from condvae.errors import CondVAEError
from condvae.guards import check_count, check_memory, memory_limit
from condvae.models import VAE
from condvae.streams import Stream, query_keys

# What conditioning reads of a model: condvae.models.VAE's protocol, checked by duck typing.
PROTOCOL = "prior decode encode log_likelihood prepare likelihood data_shape latent_dim device".split()


def check_vae(vae: object) -> None:
    """Refuse, in one line, anything that is not a conditionable VAE."""
    missing = [name for name in PROTOCOL if not hasattr(vae, name)]
    if missing:
        raise CondVAEError(
            "vae: expected a VAE (prior, decode(z) giving a per-dimension p(x | z), log_likelihood(x, z, "
            f"mask), data_shape, latent_dim: see condvae.models.VAE), got {type(vae).__name__} "
            f"without {', '.join(missing)}"
        )


def reparameterize(dist: Distribution, eps: torch.Tensor) -> torch.Tensor:
    """The draw of ``dist`` driven by standard normals ``eps`` ``[n, *batch, d]``.

    Gaussians and any distribution with ``from_noise`` (the top-down chains of hierarchical
    VAEs), so that per-query noise drives draws from every model's prior, not only N(0, I).
    """
    if isinstance(dist, MultivariateNormal):
        return dist.loc + (dist.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return dist.base_dist.loc + dist.base_dist.scale * eps
    from_noise = getattr(dist, "from_noise", None)
    if from_noise is None:
        raise TypeError(f"cannot draw a {type(dist).__name__} from standard normal noise")
    return from_noise(eps)


class Query:
    """A validated batch of B queries for ``vae``.

    Arguments:
        vae: the pretrained model (the protocol of ``condvae.models.VAE``).
        x: items ``[B, *data_shape]`` (or one item); values where ``mask`` is False are ignored.
        mask: bool, the shape of ``x`` (or of one item, shared), True = observed (the evidence).
        seed: with each query's evidence and mask, the key of its random streams.
        complete: allow masks that observe every dimension (log p(x) of whole items, as
            references need); ``condition`` never does, since nothing is left to complete.
    """

    def __init__(
        self, vae: VAE, x: torch.Tensor, mask: torch.Tensor, seed: int = 0, *, complete: bool = False
    ) -> None:
        check_vae(vae)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise CondVAEError(f"seed: expected an integer, got {seed!r}")
        if not isinstance(x, torch.Tensor):
            raise CondVAEError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if not isinstance(mask, torch.Tensor):
            raise CondVAEError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
        if x.is_meta or mask.is_meta:
            raise CondVAEError("x: meta tensors hold no values; expected tensors with data (cpu or cuda)")
        shape = vae.data_shape
        if tuple(x.shape) == shape:  # a single query
            x = x.unsqueeze(0)
        if tuple(mask.shape) == shape:
            mask = mask.unsqueeze(0).expand(x.shape[0], *shape)
        if tuple(x.shape[1:]) != shape:
            raise CondVAEError(f"x: expected shape [B, {', '.join(map(str, shape))}], got {list(x.shape)}")
        if mask.shape != x.shape:
            raise CondVAEError(f"mask: expected the shape of x {list(x.shape)}, got {list(mask.shape)}")
        if x.shape[0] == 0:
            raise CondVAEError(f"x: expected at least one query, got an empty batch {list(x.shape)}")
        if mask.dtype != torch.bool:
            if not ((mask == 0) | (mask == 1)).all():
                raise CondVAEError("mask: expected booleans (or 0/1 values), True = observed")
            mask = mask.bool()
        device = vae.device
        x, mask = x.to(device=device, dtype=torch.float32), mask.to(device)
        observed = mask.flatten(1).sum(1)
        full = (observed == mask[0].numel()).nonzero().flatten()
        if len(full) and not complete:
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
        """The model's fast path for this evidence, built on first use (``ipa`` never pays for it)."""
        with torch.no_grad():
            return self.vae.prepare(self.x, self.mask)

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.vae.latent_dim

    def stream(self, name: str) -> Stream:
        """The named random stream of these queries (see ``condvae.streams``)."""
        return Stream(self.keys, name, self.vae.device)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x_o, z) = log p(z) + sum_d m_d log p(x_d | z), shape ``z.shape[:-1]``."""
        return self.vae.prior.log_prob(z) + self.vae.log_likelihood(self.x, z, self.mask, self.prepared)


@dataclasses.dataclass
class Diagnostics:
    """What a fit reports; each method extends it with a dataclass of its own fields.

    Fields read as attributes (``post.diagnostics.seconds``) or, for scripts, as keys
    (``post.diagnostics["seconds"]``).
    """

    method: str = ""
    seconds: float = 0.0
    decoder_evaluations_per_query: int = 0
    note: str | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]


class Posterior(abc.ABC):
    """An approximation q(z) of p(z | x_o) for each of the B queries of ``query``.

    A method subclasses it with every option a keyword argument of ``__init__`` (validated
    there), does its work in ``run()`` and draws with ``sample(n)``; ``condvae.condition``
    builds it, runs it and times it. Each ``sample`` call reads a fresh block
    (``draw_index()``) of the query's named streams, so query i's draws never depend on its
    batch mates.
    """

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False  # samples are exact draws from p(z | x_o)
    diagnostics_type: ClassVar[type[Diagnostics]] = Diagnostics

    def __init__(self, query: Query) -> None:
        self.query = query
        self.diagnostics = self.diagnostics_type(method=self.name)
        if bool(query.prior_only.any()):
            self.diagnostics.note = "some queries observe nothing: their posterior is the prior"
        self._draws = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every method's draws are guarded at the boundary, its own code need not repeat it.
        super().__init_subclass__(**kwargs)
        for name in ("sample", "sample_and_log_prob"):
            if name in cls.__dict__ and not getattr(cls.__dict__[name], "guarded", False):
                setattr(cls, name, _guarded(cls.__dict__[name]))

    @classmethod
    def options(cls) -> list[str]:
        """The method's options: its constructor's keyword arguments."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY]

    def draw_index(self) -> int:
        """A fresh index into this posterior's sampling streams: each sample() call gets its own."""
        self._draws += 1
        return self._draws

    def fit_memory(self) -> tuple[str, float]:
        """The option that sets the fit's peak memory and that peak in bytes, roughly: by
        default ``samples`` draws of z per query decoded at once. Methods whose memory grows
        with another option (particles, chains, a grid's size) say so by overriding this."""
        samples = getattr(self, "samples", None) or getattr(self.diagnostics, "samples", None) or 1
        return "samples", decoded_bytes(self.query, int(samples))

    @classmethod
    def fit(cls, query: Query, **options: Any) -> Posterior:
        """Construct the method with its options, check its memory, run it and time it."""
        post = cls(query, **options)
        argument, nbytes = post.fit_memory()
        check_memory(nbytes, argument, f"fitting {cls.name!r} to {query.batch} queries")
        start = time.perf_counter()
        with torch.no_grad():
            post.run()
        post.diagnostics.seconds = time.perf_counter() - start
        return post

    def run(self) -> None:  # noqa: B027 (an optional hook, not an abstract method)
        """The method's work at fit time (sampling, tabulating, finding a bound); none by default."""

    @abc.abstractmethod
    def sample(self, n: int) -> torch.Tensor:
        """n latent samples per query, ``[n, B, latent_dim]``."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) at arbitrary z, ``z.shape[:-1]`` (methods with an invertible density)."""
        raise CondVAEError(f"method {self.name!r} cannot score arbitrary z (no inverse)")

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples and their log q(z), ``[n, B, d]`` and ``[n, B]`` (methods with a density)."""
        raise CondVAEError(f"method {self.name!r} gives samples without a density (no C-ELBO)")

    def log_evidence(self) -> torch.Tensor:
        """An estimate of log p(x_o) per query, ``[B]`` (grid, importance, rejection)."""
        raise CondVAEError(f"method {self.name!r} does not estimate log p(x_o); use grid or importance")

    @property
    def has_density(self) -> bool:
        return type(self).sample_and_log_prob is not Posterior.sample_and_log_prob

    @torch.no_grad()
    def complete(self, n: int, mean: bool = False) -> torch.Tensor:
        """n completions per query with the evidence pasted back, ``[n, B, *data_shape]``.

        y ~ p(y | z) with z ~ q (``mean=True``: the decoder's mean instead of a draw).
        """
        _check_n(n)
        q = self.query
        check_memory(n * decoded_bytes(q, 1), "n", f"{n} completions of {q.batch} queries")
        return torch.cat([self._complete(k, mean) for k in self._chunks(n)])

    def _complete(self, n: int, mean: bool) -> torch.Tensor:
        p = self.query.vae.decode(self.sample(n))
        y = p.mean if mean else p.sample()
        return torch.where(self.query.mask, self.query.x, y)

    def _chunks(self, n: int) -> list[int]:
        """``n`` split into blocks whose decoded draws fit in a quarter of the memory limit (at
        most 1 GB), so that metrics over many draws run in bounded memory."""
        per_draw = decoded_bytes(self.query, 1)
        block = max(1, int(min(memory_limit() / 4, 1e9) // per_draw))
        return [min(block, n - start) for start in range(0, n, block)]

    @torch.no_grad()
    def c_elbo(self, n: int = 500) -> torch.Tensor:
        """Monte Carlo C-ELBO per query, ``[B]``: mean over n draws of log p(x_o, z) - log q(z)."""
        _check_n(n)
        total = torch.zeros(self.query.batch, device=self.query.x.device)
        for k in self._chunks(n):
            z, log_q = self.sample_and_log_prob(k)
            total += (self.query.log_joint(z) - log_q).sum(0)
        return total / n

    @torch.no_grad()
    def query_log_likelihood(
        self, x_true: torch.Tensor, n: int = 500, proposal: Distribution | None = None
    ) -> torch.Tensor:
        """log (1/n) sum_m p(y_true | z_m), z_m ~ q: the query marginal likelihood, ``[B]``.

        Its expectation lies below log ∫ p(y_true | z) q(z) dz by Jensen's inequality, and by
        far when p(y_true | z) is much narrower than q (sparse evidence, many latent dimensions):
        plain draws from q then rarely land where y_true is likely. ``proposal`` (a distribution
        over z with batch shape [B], for example the encoder on the whole item) estimates the same
        integral by multiple importance sampling, half the draws from q and half from the
        proposal, each weighted by q(z) / (½ q(z) + ½ r(z)) (the balance heuristic of
        Veach & Guibas, "Optimally combining sampling techniques for Monte Carlo rendering",
        1995; with q in the mixture, a defensive one: Hesterberg, "Weighted average importance
        sampling and defensive mixture distributions", 1995): unbiased for the integral, with a
        second moment at most twice the plain estimator's (the weights are at most 2), and far
        less biased in log space when the proposal sits where y_true is likely. Methods that
        can score arbitrary z only.
        """
        _check_n(n)
        q = self.query
        if not isinstance(x_true, torch.Tensor):
            raise CondVAEError(f"x_true: expected a torch.Tensor, got {type(x_true).__name__}")
        if tuple(x_true.shape) == q.vae.data_shape and q.batch == 1:
            x_true = x_true[None]
        if x_true.shape != q.x.shape:
            raise CondVAEError(
                f"x_true: expected the shape of the queries' x {list(q.x.shape)}, got {list(x_true.shape)}"
            )
        x_true = x_true.to(q.x.device, torch.float32)
        y_mask = ~q.mask
        q.vae.likelihood.check_support(x_true[y_mask], "x_true")
        if proposal is None:
            ll = torch.cat([q.vae.log_likelihood(x_true, self.sample(k), y_mask) for k in self._chunks(n)])
            return torch.logsumexp(ll, 0) - math.log(n)
        self._check_proposal(proposal, n)
        own = n - n // 2
        log_share = (math.log(own / n), math.log(1 - own / n))

        def weighted(z: torch.Tensor) -> torch.Tensor:
            log_q = self.log_prob(z)
            log_mix = torch.logaddexp(log_q + log_share[0], proposal.log_prob(z) + log_share[1])
            return q.vae.log_likelihood(x_true, z, y_mask) + log_q - log_mix

        parts = [weighted(self.sample(k)) for k in self._chunks(own)]
        parts += [weighted(self._proposal_draws(proposal, k)) for k in self._chunks(n - own)]
        return torch.logsumexp(torch.cat(parts), 0) - math.log(n)

    def _check_proposal(self, proposal: object, n: int) -> None:
        q = self.query
        if not isinstance(proposal, Distribution):
            raise CondVAEError(f"proposal: expected a torch Distribution, got {type(proposal).__name__}")
        shape = tuple(proposal.batch_shape + proposal.event_shape)
        if shape != (q.batch, q.latent_dim):
            raise CondVAEError(
                f"proposal: expected batch shape [{q.batch}] and event shape [{q.latent_dim}], "
                f"got {list(proposal.batch_shape)} and {list(proposal.event_shape)}"
            )
        if n < 2:
            raise CondVAEError(f"n: expected at least 2 draws with a proposal (half from each), got {n}")
        if getattr(self.diagnostics, "iw", 1) > 1:  # its draws are resampled from K of q, not q's
            raise CondVAEError(
                f"proposal: method {self.name!r} with iw={self.diagnostics['iw']} draws by resampling, "
                "so its draws have no density to weight; use the plain estimate (no proposal)"
            )
        try:  # before any draw: z = 0 is in the support of every density a method gives
            self.log_prob(torch.zeros(1, q.batch, q.latent_dim, device=q.x.device))
        except CondVAEError as exc:
            raise CondVAEError(f"proposal: needs a method that scores arbitrary z; {exc}") from None

    def _proposal_draws(self, proposal: Distribution, n: int) -> torch.Tensor:
        eps = self.query.stream("qll/proposal").normal(n, self.query.latent_dim, self.draw_index())
        try:
            return reparameterize(proposal, eps)
        except TypeError:
            return proposal.sample((n,))


def check_option_types(cls: type[Posterior], options: dict[str, Any]) -> None:
    """Each option against the type its constructor declares, before the method reads it: a
    string where a number belongs is one line naming the option, not a TypeError from inside."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # a user's method with annotations that do not resolve
        return
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not _matches(value, hint):
            shown = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
            raise CondVAEError(f"{key}: expected {shown}, got {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    target = origin or hint
    if target is collections.abc.Callable:
        return callable(value)
    return not isinstance(target, type) or isinstance(value, target)


def _check_n(n: int) -> None:
    check_count(n, "n", what="number of samples")


def decoded_bytes(query: Query, n: int) -> float:
    """Rough peak bytes of decoding ``n`` draws of z for every query: the likelihood's
    parameters, its log-density, a draw and their gradients, each the size of x (float32)."""
    return 4.0 * n * query.batch * (4 * query.x[0].numel() + 4 * query.latent_dim)


def _guarded(method: Any) -> Any:
    """``sample(n)`` / ``sample_and_log_prob(n)`` with ``n`` and its memory checked first."""

    @functools.wraps(method)
    def guarded(self: Posterior, n: int, *args: Any, **kwargs: Any) -> Any:
        _check_n(n)
        q = self.query
        check_memory(16.0 * n * q.batch * q.latent_dim, "n", f"{n} samples of {q.batch} queries")
        return method(self, n, *args, **kwargs)

    guarded.guarded = True  # type: ignore[attr-defined]
    return guarded
