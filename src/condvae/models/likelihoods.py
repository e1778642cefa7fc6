"""Per-dimension decoder likelihoods p(x_d | z).

Each head turns the decoder's raw output (``params_per_dim`` numbers per data dimension,
stacked on the channel axis) into a ``torch.distributions.Distribution`` whose
``batch_shape`` is ``[..., *data_shape]``, so ``log_prob(x)`` is per dimension and a mask
can select the evidence: ``log p(x_o | z) = sum_d mask_d * log p(x_d | z)``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Normal, constraints

from condvae.errors import CondVAEError


class DiscretizedLogistic(Distribution):
    """Logistic density integrated over 256 bins of [0, 1] (Salimans et al. 2017, PixelCNN++).

    P(x) = sigmoid((x + 1/510 - mu)/s) - sigmoid((x - 1/510 - mu)/s), with the first and last
    bins taking all the mass below 0 and above 1. Values are pixels / 255.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "log_scale": constraints.real,
    }
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, bins: int = 256) -> None:
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        self.bins = bins
        super().__init__(batch_shape=self.loc.shape, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        half = 0.5 / (self.bins - 1)
        inv_s = torch.exp(-self.log_scale)
        centred = value - self.loc
        upper = inv_s * (centred + half)
        lower = inv_s * (centred - half)
        log_cdf_upper = nn.functional.logsigmoid(upper)  # log P(X <= x + half)
        log_sf_lower = nn.functional.logsigmoid(-lower)  # log P(X > x - half)
        # log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log(1 - exp(b - a)) + log sigmoid(-b)
        mid = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(lower - upper)).clamp_min(-1e4)
        # Where the bin is so narrow that the difference underflows, use density * width.
        log_pdf = -inv_s.log() - centred * inv_s - 2 * nn.functional.softplus(-centred * inv_s)
        mid = torch.where(upper - lower > 1e-5, mid, log_pdf + math.log(2 * half))
        out = torch.where(value < half, log_cdf_upper, mid)
        return torch.where(value > 1 - half, log_sf_lower, out)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.clamp(0.0, 1.0)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            return torch.round(x.clamp(0.0, 1.0) * (self.bins - 1)) / (self.bins - 1)


class Likelihood(nn.Module):
    """Maps raw decoder output ``[..., P*C, H, W]`` (P = params_per_dim) to a distribution."""

    name: str = ""
    params_per_dim: int = 1

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    def forward(self, raw: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def log_prob_flat(self, raw: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """log p(x_d | z) for selected flat dims ``index``: ``raw`` [..., n, P], ``x`` [..., n].

        The fast path of decoders that compute only the outputs of the observed dims.
        """
        raise NotImplementedError

    def check_support(self, x: torch.Tensor, argument: str = "x") -> None:
        """Raise a clear error if ``x`` has values this likelihood gives no density to."""
        if torch.isnan(x).any():
            raise CondVAEError(f"{argument}: contains NaN values")
        if ((x < 0) | (x > 1)).any():
            lo, hi = float(x.min()), float(x.max())
            raise CondVAEError(
                f"{argument}: {self.name} likelihood expects values in [0, 1], got [{lo:g}, {hi:g}]"
            )


class BernoulliLikelihood(Likelihood):
    """p(x_d | z) = Bernoulli(sigmoid(logit_d)); defined for x_d in {0, 1}."""

    name = "bernoulli"

    def forward(self, raw: torch.Tensor) -> Distribution:
        return Bernoulli(logits=raw, validate_args=False)

    def log_prob_flat(self, raw: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logits = raw[..., 0]
        return x * logits - nn.functional.softplus(logits)

    def check_support(self, x: torch.Tensor, argument: str = "x") -> None:
        super().check_support(x, argument)
        if ((x != 0) & (x != 1)).any():
            raise CondVAEError(
                f"{argument}: bernoulli likelihood expects binary values 0/1 "
                "(binarise grey images first, e.g. condvae.data.fixed_binarize)"
            )


class GaussianLikelihood(Likelihood):
    """p(x_d | z) = N(mu_d(z), sigma_d^2), sigma_d a learned per-dimension scale >= min_scale."""

    name = "gaussian"

    def __init__(self, data_shape: tuple[int, ...], min_scale: float = 1e-2) -> None:
        super().__init__(data_shape)
        self.min_scale = min_scale
        self.log_scale = nn.Parameter(torch.full(self.data_shape, math.log(0.1)))

    def forward(self, raw: torch.Tensor) -> Distribution:
        scale = self.log_scale.exp().clamp_min(self.min_scale)
        return Normal(raw, scale.expand_as(raw), validate_args=False)

    def log_prob_flat(self, raw: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        scale = self.log_scale.exp().clamp_min(self.min_scale).flatten()[index]
        return Normal(raw[..., 0], scale, validate_args=False).log_prob(x)

    def check_support(self, x: torch.Tensor, argument: str = "x") -> None:
        if not torch.isfinite(x).all():
            raise CondVAEError(f"{argument}: contains NaN or infinite values")


class LogisticLikelihood(Likelihood):
    """Discretised logistic on 256 levels; the decoder gives a mean and a log-scale per pixel."""

    name = "logistic"
    params_per_dim = 2

    def forward(self, raw: torch.Tensor) -> Distribution:
        loc, log_scale = raw.split(self.data_shape[0], dim=-len(self.data_shape))
        return DiscretizedLogistic(torch.sigmoid(loc), log_scale.clamp(-7.0, 2.0))

    def log_prob_flat(self, raw: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        dist = DiscretizedLogistic(torch.sigmoid(raw[..., 0]), raw[..., 1].clamp(-7.0, 2.0))
        return dist.log_prob(x)


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "logistic": LogisticLikelihood,
}


def make_likelihood(name: str, data_shape: tuple[int, ...]) -> Likelihood:
    if name not in LIKELIHOODS:
        raise CondVAEError(f"likelihood: unknown {name!r}; expected one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](data_shape)
