"""A VAE for tables: per-column likelihoods, a stored scaler and a natively partial encoder.

Columns (``condvae.data.tables.infer_columns``) are ``gaussian``, ``bernoulli`` or
``categorical``. The model works in *model space*: gaussian columns standardised,
``(x - loc) / scale``; bernoulli columns 0/1; categorical columns their integer codes 0..K-1.
``to_model`` and ``from_model`` map raw units to model space and back (NaN = missing is kept);
every other method (``encode``, ``decode``, ``log_likelihood``, conditioning) takes model space.

The likelihood factorises over columns,

    p(x | z) = prod_{gaussian d} N(x_d; mu_d(z), sigma_d^2)
               prod_{bernoulli d} Bern(x_d; sigmoid(l_d(z)))
               prod_{categorical d} Cat(x_d; softmax(l_d(z))),

sigma_d a learned per-column scale, so any split into observed and unobserved columns is scored
as ``log p(x_o | z) = sum_{d observed} log p(x_d | z)``.

The encoder reads the observed entries and the mask, ``[x * m, m]`` (categorical columns one-hot
encoded), so ``encode_partial(x, mask)`` is q(z | x_o, m) for any mask: the MIWAE encoder
(Mattei & Frellsen, "MIWAE: Deep generative modelling and imputation of incomplete data sets",
ICML 2019, arXiv:1812.02633). Unobserved entries may be NaN: they are replaced with zeros by
``torch.where`` before any arithmetic, so NaN never reaches a gradient.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.distributions import Distribution, constraints

from condvae.errors import CondVAEError, DataError
from condvae.models.base import VAE, diagonal_normal
from condvae.models.likelihoods import Likelihood
from condvae.models.mlp import ACTIVATIONS, mlp
from condvae.models.precision import decoder_forward

KINDS = ("gaussian", "bernoulli", "categorical")


def check_columns(columns: Any) -> list[dict[str, Any]]:
    """Validated column specs (see ``infer_columns``), as plain JSON-able dicts."""
    if not isinstance(columns, list | tuple) or not columns:
        raise CondVAEError("columns: expected a non-empty list of column specs (see infer_columns)")
    out = []
    for j, spec in enumerate(columns):
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            raise CondVAEError(f"columns: entry {j} is not a column spec with a kind in {KINDS}")
        name, kind = str(spec.get("name", f"x{j}")), spec["kind"]
        if kind == "gaussian":
            loc, scale = float(spec.get("loc", 0.0)), float(spec.get("scale", 1.0))
            if not (math.isfinite(loc) and math.isfinite(scale) and scale > 0):
                raise CondVAEError(f"columns: column {name!r} needs a finite loc and a positive scale")
            out.append({"name": name, "kind": kind, "loc": loc, "scale": scale})
        else:
            values = [float(v) for v in spec.get("values", [])]
            want = 2 if kind == "bernoulli" else None
            if len(values) < 2 or (want and len(values) != want) or sorted(set(values)) != values:
                raise CondVAEError(f"columns: column {name!r} ({kind}) needs sorted distinct 'values'")
            out.append({"name": name, "kind": kind, "values": values})
    return out


class TabularDistribution(Distribution):
    """p(x | z) of a table: batch shape ``[..., D]``, one factor per column (see the module).

    ``log_prob(x)`` is per column; ``sample()`` draws every column; ``mean`` is the Gaussian
    mean, the Bernoulli probability and, for categorical columns, the most probable code (the
    expected code of an unordered category means nothing).
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, head: TabularLikelihood, raw: torch.Tensor) -> None:
        self.head = head
        g, b = head.n_gaussian, head.n_bernoulli
        self.loc = raw[..., :g]
        self.scale = head.scales().expand_as(self.loc)
        self.logits = raw[..., g : g + b]
        cat = raw[..., g + b :].unflatten(-1, (head.n_categorical, head.max_k))
        self.cat_logits = cat.masked_fill(~head.valid_codes, float("-inf"))
        super().__init__(batch_shape=torch.Size((*raw.shape[:-1], len(head.columns))), validate_args=False)

    def _ordered(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Gaussian, Bernoulli, categorical blocks back to the columns' order."""
        return torch.cat(parts, -1)[..., self.head.inverse]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        h = self.head
        value = value.to(self.loc.dtype)
        x_g, x_b, x_c = value[..., h.index_g], value[..., h.index_b], value[..., h.index_c]
        lp_g = -((x_g - self.loc) ** 2) / (2 * self.scale**2) - self.scale.log() - 0.5 * math.log(2 * math.pi)
        lp_b = x_b * self.logits - nn.functional.softplus(self.logits)
        log_p = torch.log_softmax(self.cat_logits, -1)  # [..., C, K]
        shape = torch.broadcast_shapes(x_c.shape, log_p.shape[:-1])
        codes = torch.nan_to_num(x_c, nan=-1.0).expand(shape)
        k = codes.round().long()
        inside = (codes == k) & (k >= 0) & (k < h.n_codes)  # a value off the codes has no mass
        picked = torch.gather(log_p.expand(*shape, h.max_k), -1, k.clamp(0, h.max_k - 1)[..., None])[..., 0]
        lp_c = torch.where(inside, picked, torch.full_like(picked, float("-inf")))
        lp_c = torch.where(torch.isnan(x_c.expand(shape)), torch.full_like(picked, float("nan")), lp_c)
        shape = torch.broadcast_shapes(lp_g.shape[:-1], lp_b.shape[:-1], lp_c.shape[:-1])
        return self._ordered([p.expand(*shape, p.shape[-1]) for p in (lp_g, lp_b, lp_c)])

    @property
    def mean(self) -> torch.Tensor:
        return self._ordered(
            [self.loc, torch.sigmoid(self.logits), self.cat_logits.argmax(-1).to(self.loc.dtype)]
        )

    @property
    def mode(self) -> torch.Tensor:
        return self._ordered(
            [self.loc, (self.logits > 0).to(self.loc.dtype), self.cat_logits.argmax(-1).to(self.loc.dtype)]
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            loc = self.loc.expand(shape + self.loc.shape)
            x_g = loc + self.scale * torch.randn_like(loc)
            probs = torch.sigmoid(self.logits).expand(shape + self.logits.shape)
            x_b = torch.bernoulli(probs)
            probs_c = torch.softmax(self.cat_logits, -1).expand(shape + self.cat_logits.shape)
            x_c = probs_c.new_zeros(probs_c.shape[:-1])
            if x_c.numel():  # multinomial refuses an empty batch
                x_c = (
                    torch.multinomial(probs_c.reshape(-1, self.head.max_k), 1)
                    .reshape(x_c.shape)
                    .to(loc.dtype)
                )
            return self._ordered([x_g, x_b, x_c])


class TabularLikelihood(Likelihood):
    """Per-column heads: the decoder gives one mean per gaussian column (its scale sigma_d is a
    learned parameter, >= ``min_scale``), one logit per bernoulli column and K logits per
    categorical column (padded to the largest K)."""

    name = "tabular"

    def __init__(self, columns: list[dict[str, Any]], min_scale: float = 1e-2) -> None:
        super().__init__((len(columns),))
        self.columns, self.min_scale = columns, min_scale
        kinds = [c["kind"] for c in columns]
        index = {k: [j for j, kind in enumerate(kinds) if kind == k] for k in KINDS}
        self.n_gaussian, self.n_bernoulli = len(index["gaussian"]), len(index["bernoulli"])
        self.n_categorical = len(index["categorical"])
        k = [len(columns[j]["values"]) for j in index["categorical"]]
        self.max_k = max(k, default=1)
        self.width = self.n_gaussian + self.n_bernoulli + self.n_categorical * self.max_k
        order = index["gaussian"] + index["bernoulli"] + index["categorical"]
        self.register_buffer("index_g", torch.tensor(index["gaussian"], dtype=torch.long), persistent=False)
        self.register_buffer("index_b", torch.tensor(index["bernoulli"], dtype=torch.long), persistent=False)
        self.register_buffer(
            "index_c", torch.tensor(index["categorical"], dtype=torch.long), persistent=False
        )
        self.register_buffer("inverse", torch.argsort(torch.tensor(order)), persistent=False)
        self.register_buffer("n_codes", torch.tensor(k, dtype=torch.long), persistent=False)
        valid = torch.arange(self.max_k) < torch.tensor(k, dtype=torch.long).reshape(-1, 1)
        self.register_buffer("valid_codes", valid.reshape(self.n_categorical, self.max_k), persistent=False)
        self.log_scale = nn.Parameter(torch.zeros(self.n_gaussian))  # sigma = 1: the standardised spread

    def scales(self) -> torch.Tensor:
        return self.log_scale.exp().clamp_min(self.min_scale)

    def forward(self, raw: torch.Tensor) -> Distribution:
        return TabularDistribution(self, raw)

    def check_support(self, x: torch.Tensor, argument: str = "x") -> None:
        """Model-space values: NaN (missing) allowed, infinities refused; with whole rows
        ``[..., D]``, bernoulli columns must be 0/1 and categorical ones codes 0..K-1."""
        if torch.isinf(x).any():
            raise CondVAEError(f"{argument}: contains infinite values")
        if x.dim() < 2 or x.shape[-1] != len(self.columns):
            return  # a flat selection of values: no columns to check against
        for j, spec in enumerate(self.columns):
            if spec["kind"] == "gaussian":
                continue
            col = x[..., j]
            col = col[~torch.isnan(col)]
            top = 1 if spec["kind"] == "bernoulli" else len(spec["values"]) - 1
            if ((col != col.round()) | (col < 0) | (col > top)).any():
                raise CondVAEError(
                    f"{argument}: column {spec['name']!r} ({spec['kind']}) expects codes 0..{top} in model "
                    "space (map raw values with vae.to_model)"
                )


class TabularVAE(VAE):
    """A VAE of a table with per-column likelihoods and a natively partial encoder.

    Encoder ``[x * m, m] -> hidden... -> (mu, softplus scale)`` of q(z | x_o, m) (categorical
    columns one-hot); decoder ``z -> hidden... ->`` the per-column likelihood's parameters.

    Arguments:
        columns: the column specs (``condvae.data.tables.infer_columns``): kinds and the
            scaler, stored in the config so ``to_model`` / ``from_model`` travel with the model.
        latent_dim: dimension of z.
        hidden: widths of the hidden layers (the decoder mirrors them).
        activation: "relu", "tanh" or "elu".

    References:
        Mattei & Frellsen, "MIWAE: Deep generative modelling and imputation of incomplete data
        sets", ICML 2019, arXiv:1812.02633.
        Nazabal, Olmos, Ghahramani & Valera, "Handling incomplete heterogeneous data using
        VAEs" (HI-VAE), 2020, arXiv:1807.03653.
    """

    architecture = "tabular"

    def __init__(
        self,
        columns: list[dict[str, Any]],
        latent_dim: int = 4,
        hidden: list[int] | tuple[int, ...] = (64, 64),
        activation: str = "relu",
        data_shape: tuple[int, ...] | None = None,
        likelihood: str = "tabular",
    ) -> None:
        columns = check_columns(columns)
        if data_shape is not None and tuple(data_shape) != (len(columns),):
            raise CondVAEError(
                f"data_shape: expected ({len(columns)},) for {len(columns)} columns, got {data_shape}"
            )
        if likelihood != "tabular":
            raise CondVAEError(
                f"likelihood: a TabularVAE has per-column likelihoods ('tabular'), got {likelihood!r}"
            )
        # The base class builds a named likelihood; the per-column one replaces it right away.
        super().__init__((len(columns),), latent_dim, "gaussian")
        if activation not in ACTIVATIONS:
            raise CondVAEError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise CondVAEError(f"hidden: expected a non-empty list of positive widths, got {hidden}")
        self.columns, self.hidden, self.activation = columns, [int(h) for h in hidden], activation
        self.likelihood: TabularLikelihood = TabularLikelihood(columns)  # type: ignore[assignment]
        head = self.likelihood
        features = head.n_gaussian + head.n_bernoulli + head.n_categorical * head.max_k
        self.encoder = mlp([features + len(columns), *self.hidden, 2 * latent_dim], activation)
        self.decoder = mlp([latent_dim, *self.hidden[::-1], head.width], activation)

    def config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "columns": self.columns,
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "activation": self.activation,
            "data_shape": list(self.data_shape),
        }

    @property
    def column_names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    # -- raw units <-> model space -------------------------------------------------------
    def to_model(self, x: Any, argument: str = "x") -> torch.Tensor:
        """Raw units ``[N, D]`` (tensor or array, NaN = missing) to model space, float32 on the
        model's device: gaussian columns ``(x - loc) / scale``, bernoulli 0/1, categorical codes.
        A bernoulli or categorical value outside the column's values is refused naming it; a
        DataFrame or ``Table`` whose column names differ from the model's is refused naming them."""
        names = getattr(x, "columns", None)
        if names is not None and not isinstance(x, torch.Tensor):  # a DataFrame or a Table: names known
            names = [str(c) for c in names]
            if names != self.column_names:
                odd = [n for n in names if n not in self.column_names] or names
                raise DataError(
                    f"{argument}: columns {odd[:3]} differ from the model's {self.column_names[:3]}..."
                    " (same names in the same order expected)"
                )
            x = x.x if hasattr(x, "split") and hasattr(x, "x") else x
        raw = torch.from_numpy(  # a copy: a read-only pandas array stays untouched
            np.array(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        )
        self._check_width(raw, argument)
        out = torch.empty_like(raw)
        for j, spec in enumerate(self.columns):
            col = raw[..., j]
            if spec["kind"] == "gaussian":
                out[..., j] = (col - spec["loc"]) / spec["scale"]
                continue
            values = torch.tensor(spec["values"], dtype=torch.float64)
            hit = col[..., None] == values
            known = hit.any(-1) | torch.isnan(col)
            if not bool(known.all()):
                bad = float(col[~known][0])
                raise DataError(
                    f"{argument}: column {spec['name']!r} has the value {bad:g}, not one of its "
                    f"{spec['kind']} values {spec['values']}"
                )
            out[..., j] = torch.where(
                torch.isnan(col), col, hit.to(torch.float64).argmax(-1).to(torch.float64)
            )
        return out.to(device=self.device, dtype=torch.float32)

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """Model space ``[..., D]`` back to raw units, float64: gaussian ``x * scale + loc``;
        bernoulli values above 1/2 (e.g. a probability from ``.mean``) are the larger value;
        categorical codes are rounded and clamped to the column's codes. NaN stays NaN."""
        x = torch.as_tensor(x).detach().to("cpu", torch.float64)
        self._check_width(x, "x")
        out = torch.empty_like(x)
        for j, spec in enumerate(self.columns):
            col = x[..., j]
            if spec["kind"] == "gaussian":
                out[..., j] = col * spec["scale"] + spec["loc"]
                continue
            values = torch.tensor(spec["values"], dtype=torch.float64)
            code = (col > 0.5).long() if spec["kind"] == "bernoulli" else col.nan_to_num(0).round().long()
            mapped = values[code.clamp(0, len(values) - 1)]
            out[..., j] = torch.where(torch.isnan(col), col, mapped)
        return out

    def _check_width(self, x: torch.Tensor, argument: str) -> None:
        if x.dim() < 1 or x.shape[-1] != len(self.columns):
            raise DataError(
                f"{argument}: the model has {len(self.columns)} columns ({', '.join(self.column_names[:4])}"
                f"{', ...' if len(self.columns) > 4 else ''}), got shape {list(x.shape)}"
            )

    # -- the protocol --------------------------------------------------------------------
    def _features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The encoder's input ``[x * m, m]``; ``torch.where`` keeps NaN out of the arithmetic."""
        head = self.likelihood
        mask = mask.expand_as(x) if mask.shape != x.shape else mask
        x0 = torch.where(mask, x, torch.zeros_like(x))
        m = mask.to(x0.dtype)
        parts = [x0[..., head.index_g], x0[..., head.index_b]]
        if head.n_categorical:
            codes = x0[..., head.index_c].round().long().clamp(0, head.max_k - 1)
            one_hot = nn.functional.one_hot(codes, head.max_k).to(x0.dtype) * m[..., head.index_c, None]
            parts.append(one_hot.flatten(-2))
        return torch.cat([*parts, m], -1)

    def encode_partial(self, x: torch.Tensor, mask: torch.Tensor) -> Distribution:
        """q(z | x_o, m) for items ``[..., D]`` and a bool mask (True = observed) of their shape;
        values where the mask is False are never read (they may be NaN)."""
        h = self.encoder(self._features(x, mask.to(device=x.device, dtype=torch.bool)))
        loc, pre_scale = h.chunk(2, dim=-1)
        return diagonal_normal(loc, nn.functional.softplus(pre_scale) + 1e-4)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z | x) with every entry observed, except NaN entries, which count as missing."""
        return self.encode_partial(x, ~torch.isnan(x))

    def decode(self, z: torch.Tensor) -> Distribution:
        return self.likelihood(decoder_forward(self.decoder, self.device, z))

    def log_likelihood(
        self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None, prepared: Any = None
    ) -> torch.Tensor:
        """log p(x_o | z) = sum over observed d of log p(x_d | z); ``mask=None`` observes every
        non-NaN entry. Unobserved entries are zeroed before scoring and dropped with
        ``torch.where`` (a NaN times zero would still be NaN, in the value and the gradient)."""
        mask = ~torch.isnan(x) if mask is None else mask.to(device=x.device, dtype=torch.bool)
        x0 = torch.where(mask, x, torch.zeros_like(x))
        per_dim = self.decode(z).log_prob(x0)
        return torch.where(mask, per_dim, torch.zeros_like(per_dim)).sum(-1)

    def iwae(self, x: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The MIWAE bound per row, ``[B]``, on the observed entries (``mask``, default: not NaN):

        log (1/k) sum_i p(x_o | z_i) p(z_i) / q(z_i | x_o, m),   z_i ~ q(z | x_o, m)
        """
        mask = ~torch.isnan(x) if mask is None else mask
        q = self.encode_partial(x, mask)
        z = q.rsample((k,))
        log_w = self.log_likelihood(x, z, mask) + self.prior.log_prob(z) - q.log_prob(z)
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    def elbo(self, x: torch.Tensor, beta: float = 1.0, samples: int = 1) -> torch.Tensor:
        """ELBO per row on the observed (non-NaN) entries, analytic KL."""
        q = self.encode(x)
        z = q.rsample((samples,))
        rec = self.log_likelihood(x, z).mean(0)
        return rec - beta * torch.distributions.kl_divergence(q, self.prior)
