"""The evaluation metrics, defined once.

- ``Posterior.c_elbo``: E_q[log p(x_o, z) - log q(z)] <= log p(x_o) (higher is better) and
  ``Posterior.query_log_likelihood``: log (1/M) sum_m p(y_true | z_m), z_m ~ q (Wu, Domke &
  Sanner, "Conditional Inference in Pre-trained Variational Autoencoders via Cross-coding", 2018).
- ``exact_query_log_likelihood``: its ceiling log p(y_true | x_o) = log p(x) - log p(x_o):
  closed form for the linear-Gaussian model, the grid for 2-d latents, else an
  importance-sampling estimate (log p(x) with the encoder on the full item as proposal,
  log p(x_o) with a fitted mixture cross-coder as proposal), or on request annealed
  importance sampling in any dimension (``method="ais"``, slower and far less biased).
- ``mmd``: squared maximum mean discrepancy between two sample sets per query, RBF kernel
  with the median-heuristic bandwidth (Gretton et al. 2012), unbiased estimator.
- ``coverage``: min over K completions of the root-mean-square distance to the true image on
  the query dims (the analogue of the LPIPS-GT of Harvey, Naderiparizi & Wood, "Conditional
  Image Generation by Conditioning Variational Auto-Encoders", 2022, without a downloaded network):
  low when some completion is close to the truth, i.e. when the method covers it.
- ``diversity``: mean RMS distance between pairs of completions on the query dims.
- ``frechet_distance``: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) between Gaussians
  fitted to two feature sets (Heusel et al. 2017), features from condvae's own classifier.

Calibration of the completions on the hidden entries (~mask), batched over queries:

- ``interval_coverage``: how often the truth lies in the samples' central 50% / 90% intervals
  (nominal: 0.5 / 0.9);
- ``pit`` / ``pit_histogram``: the randomised probability integral transform (uniform when
  calibrated; U-shaped when overconfident);
- ``crps``: the continuous ranked probability score E|X - y| - 1/2 E|X - X'| (Gneiting &
  Raftery 2007), per query;
- ``brier_score`` and ``expected_calibration_error`` for binary pixels from predicted
  probabilities (Brier 1950; Naeini, Cooper & Hauskrecht 2015; Guo et al. 2017).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import cast

import numpy as np
import torch

from condvae.conditioning import condition
from condvae.conditioning.ais import ais_log_evidence
from condvae.conditioning.grid import Grid
from condvae.errors import ConditioningWarning, CondVAEError
from condvae.evaluate import iw_log_likelihood
from condvae.models import VAE, LinearGaussianVAE
from condvae.streams import generator


@dataclasses.dataclass
class Reference:
    """The reference log p(y_true | x_o) per query, where it can be trusted.

    ``value`` is ``[B]`` with NaN for the queries whose reference is unavailable; ``why``
    says why (None when every query has one); ``method`` is how it was computed.
    """

    value: torch.Tensor
    method: str
    why: str | None = None

    @property
    def available(self) -> torch.Tensor:
        return ~torch.isnan(self.value)

    def gap(self, query_ll: torch.Tensor) -> torch.Tensor:
        """reference - query log-likelihood per query (NaN where the reference is unavailable)."""
        return self.value.to(query_ll.device) - query_ll


# The AIS reference: log p(x) needs the longer walk (every pixel observed makes the posterior
# narrow). On MNIST latent 50 these settings leave BDMC sandwiches (mean over 20 simulated items)
# of 0.09 nat for log p(x_o) at 5% evidence, 0.26 at 25%, and 0.19 for log p(x): see the project's
# benchmarks page.
AIS_REFERENCE = {
    "full": {"temperatures": 3000, "particles": 32},
    "evidence": {"temperatures": 1000, "particles": 64},
}


def reference_query_log_likelihood(
    vae: VAE,
    x: torch.Tensor,
    mask: torch.Tensor,
    particles: int = 20000,
    grid_size: int = 200,
    method: str = "auto",
) -> Reference:
    """log p(y_true | x_o) = log p(x) - log p(x_o) per query: the closed form for the
    linear-Gaussian model, the grid for 2-d latents, else importance sampling (log p(x) with the
    encoder on the full item; log p(x_o) with a fitted cross-coder as proposal, the mixture or,
    where it fails or covers less, a full-covariance Gaussian). An importance estimate whose
    effective sample size is below ``max(10, particles / 100)`` rests on a few particles and
    can be off by any amount, so it is reported as unavailable rather than as a number.

    ``method="ais"`` computes both terms by annealed importance sampling with HMC moves (Neal,
    "Annealed importance sampling", 2001) with the settings ``AIS_REFERENCE``, in any dimension;
    each is a stochastic lower bound, so their difference has no sign guarantee, but its error
    can be measured by ``condvae.conditioning.sandwich`` on items simulated from the model."""
    if method not in ("auto", "ais"):
        raise CondVAEError(f"method: expected 'auto' or 'ais', got {method!r}")
    if method == "ais":
        x, mask = x.to(vae.device), mask.to(vae.device)
        log_px = ais_log_evidence(vae, x, None, **AIS_REFERENCE["full"])
        log_po = ais_log_evidence(vae, x, mask, **AIS_REFERENCE["evidence"])
        return Reference(log_px - log_po, "ais")
    if isinstance(vae, LinearGaussianVAE):
        with torch.no_grad():
            return Reference(vae.query_log_likelihood(x.to(vae.device), mask.to(vae.device)), "closed form")
    if vae.latent_dim == 2:
        grid = cast(Grid, condition(vae, x, mask, method="grid", size=grid_size))
        return Reference(grid.exact_query_log_likelihood(x), "grid")
    x = x.to(vae.device)
    log_px = iw_log_likelihood(vae, x, particles)  # encoder q(z | x) on the full item (no grad)
    # the encoder on zero-filled evidence is a poor proposal for p(z | x_o) (it reads the zeros
    # as observed); a fitted cross-coder covers it far better (higher ESS)
    ess = torch.zeros(len(x), device=x.device)
    log_evidence = torch.full((len(x),), math.nan, device=x.device)
    failures, min_ess = [], 0.0
    for method in ("mixture", "gvi"):
        try:
            proposal = condition(vae, x, mask, method=method, steps=300)
            with warnings.catch_warnings():  # judged below, per query, instead of warned about
                warnings.simplefilter("ignore", ConditioningWarning)
                post = condition(vae, x, mask, method="importance", particles=particles, proposal=proposal)
        except CondVAEError as exc:
            failures.append(f"{method} proposal: {exc}")
            continue
        estimate, min_ess = post.log_evidence(), post.diagnostics.min_ess
        better = torch.isfinite(estimate) & (post.ess > ess)
        ess, log_evidence = torch.where(better, post.ess, ess), torch.where(better, estimate, log_evidence)
        if bool((ess >= min_ess).all()):
            break
    trusted = (ess >= min_ess) & torch.isfinite(log_evidence) & torch.isfinite(log_px) & (ess > 0)
    value = torch.where(trusted, log_px - log_evidence, torch.full_like(log_px, math.nan))
    why = None
    if len(failures) == 2:
        return Reference(value, "importance", "no importance-sampling reference: " + "; ".join(failures))
    if not bool(trusted.all()):
        bad = int((~trusted).sum())
        why = (
            f"the importance-sampling reference is unreliable for {bad} of {len(x)} queries "
            f"(effective sample size {float(ess.min()):.3g} < {min_ess:g} of {particles} particles, "
            f"latent {vae.latent_dim})"
        )
        if failures:
            why += "; " + "; ".join(failures)
    return Reference(value, "importance", why)


def exact_query_log_likelihood(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, particles: int = 20000, grid_size: int = 200
) -> torch.Tensor:
    """log p(y_true | x_o) per query, NaN where no trustworthy reference exists (see
    ``reference_query_log_likelihood``, which also says why)."""
    return reference_query_log_likelihood(vae, x, mask, particles, grid_size).value


def mmd(a: torch.Tensor, b: torch.Tensor, bandwidth: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased MMD^2 per query between samples ``a`` [n, B, d] and ``b`` [m, B, d], ``[B]``.

    RBF kernel k(u, v) = exp(-|u - v|^2 / (2 h^2)); h is the median pairwise distance of the
    pooled samples of each query unless ``bandwidth`` [B] is given.
    """
    if a.dim() != 3 or b.dim() != 3 or a.shape[1:] != b.shape[1:]:
        raise CondVAEError(f"mmd: expected [n, B, d] and [m, B, d], got {list(a.shape)} and {list(b.shape)}")
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise CondVAEError("mmd: needs at least 2 samples in each set")
    pooled = torch.cat([a, b]).transpose(0, 1)  # [B, n+m, d]
    dist2 = torch.cdist(pooled, pooled) ** 2
    if bandwidth is None:
        off = dist2[:, ~torch.eye(n + m, dtype=torch.bool, device=a.device)]
        bandwidth = off.median(dim=1).values.clamp_min(1e-12).sqrt()
    kernel = torch.exp(-dist2 / (2 * bandwidth[:, None, None] ** 2))
    k_aa, k_bb, k_ab = kernel[:, :n, :n], kernel[:, n:, n:], kernel[:, :n, n:]
    sum_aa = (k_aa.sum((1, 2)) - k_aa.diagonal(dim1=1, dim2=2).sum(1)) / (n * (n - 1))
    sum_bb = (k_bb.sum((1, 2)) - k_bb.diagonal(dim1=1, dim2=2).sum(1)) / (m * (m - 1))
    return sum_aa + sum_bb - 2 * k_ab.mean((1, 2))


def _query_rms(a: torch.Tensor, b: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """RMS of a - b over the query dims; a [..., B, D], b [..., B, D], query [B, D] (float)."""
    return (((a - b) ** 2 * query).sum(-1) / query.sum(-1).clamp_min(1)).sqrt()


def coverage(completions: torch.Tensor, x_true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """min_k RMS(completion_k - x_true) over the unobserved dims, ``[B]``.

    ``completions`` [K, B, *data_shape], ``x_true`` [B, *data_shape], ``mask`` True = observed.
    """
    if completions.dim() != x_true.dim() + 1 or completions.shape[1:] != x_true.shape:
        raise CondVAEError(
            f"completions: expected shape [K, {', '.join(map(str, x_true.shape))}], "
            f"got {list(completions.shape)}"
        )
    query = (~mask.bool()).flatten(1).float()
    return _query_rms(completions.flatten(2), x_true.flatten(1), query).min(0).values


def diversity(completions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean RMS distance between the K(K-1)/2 pairs of completions on the unobserved dims, ``[B]``."""
    k = completions.shape[0]
    if k < 2:
        raise CondVAEError(f"completions: diversity needs at least 2 completions per query, got {k}")
    query = (~mask.bool()).flatten(1).float()  # [B, D]
    y = completions.flatten(2).transpose(0, 1) * query.sqrt()[:, None]  # [B, K, D]
    dist = torch.cdist(y, y) / query.sum(-1).clamp_min(1).sqrt()[:, None, None]
    return dist.sum((1, 2)) / (k * (k - 1))


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, F] and [M, F]."""
    from scipy import linalg

    if features_a.shape[0] < 2 or features_b.shape[0] < 2:
        raise CondVAEError("features: the Fréchet distance needs at least 2 items per set")
    a, b = (f.detach().double().cpu().numpy() for f in (features_a, features_b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a singular product (fewer items than features) is expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):
        root = root.real  # rounding can leave a tiny imaginary part
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


# -- calibration: are the completions' spreads honest? ----------------------------------------
def _hidden(x_true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden entries (~mask) as a bool tensor the shape of ``x_true``; refuses bad shapes."""
    if not isinstance(x_true, torch.Tensor) or x_true.dim() < 2:
        raise CondVAEError(f"x_true: expected a tensor [B, *data_shape], got {_shape(x_true)}")
    if not isinstance(mask, torch.Tensor):
        raise CondVAEError(f"mask: expected a bool tensor, got {type(mask).__name__}")
    if mask.shape == x_true.shape[1:]:  # one mask shared by every query
        mask = mask.expand_as(x_true)
    if mask.shape != x_true.shape:
        raise CondVAEError(f"mask: expected the shape of x_true {list(x_true.shape)}, got {list(mask.shape)}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise CondVAEError("mask: expected booleans (or 0/1 values), True = observed")
    hidden = ~mask.bool().to(x_true.device)
    if torch.isnan(x_true[hidden]).any():
        raise CondVAEError("x_true: NaN on hidden entries (~mask); the truth must be known there")
    return hidden


def _shape(value: object) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _check_samples(samples: torch.Tensor, x_true: torch.Tensor, least: int = 1) -> None:
    if not isinstance(samples, torch.Tensor) or tuple(samples.shape[1:]) != tuple(x_true.shape):
        raise CondVAEError(
            f"samples: expected shape [K, {', '.join(map(str, x_true.shape))}], got {_shape(samples)}"
        )
    if samples.shape[0] < least:
        raise CondVAEError(f"samples: expected at least {least} samples per query, got {samples.shape[0]}")


def _per_query(values: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each query's hidden entries, ``[B]`` (NaN for a query with none)."""
    values = torch.where(hidden, values, torch.zeros_like(values)).flatten(1)
    return values.sum(1) / hidden.flatten(1).sum(1)  # 0 / 0 = NaN: nothing hidden, nothing to score


@dataclasses.dataclass
class IntervalCoverage:
    """Coverage of central intervals: ``per_query`` ``[B, L]`` and ``overall`` ``[L]`` for ``levels``."""

    levels: tuple[float, ...]
    per_query: torch.Tensor  # [B, L]: fraction of the query's hidden values inside (NaN: none hidden)
    overall: torch.Tensor  # [L]: fraction of all hidden values of all queries inside
    count: int  # hidden values in all


def interval_coverage(
    samples: torch.Tensor,
    x_true: torch.Tensor,
    mask: torch.Tensor,
    levels: tuple[float, ...] = (0.5, 0.9),
) -> IntervalCoverage:
    """How often the hidden truth falls inside the samples' central intervals.

    For each hidden entry d of query b and each level L, the interval runs between the
    empirical quantiles (1 - L) / 2 and (1 + L) / 2 of the K samples x_{k,b,d} (linear
    interpolation), and

        coverage_L = (1 / N) sum_{b, d hidden} 1[ q_{(1-L)/2} <= y_{b,d} <= q_{(1+L)/2} ]

    should be L for a calibrated sampler (less: overconfident, more: underconfident). For
    discrete values (binary pixels) intervals collapse onto the values: use ``pit``.

    Arguments:
        samples: completions ``[K, B, *data_shape]`` (e.g. ``post.complete(K)``).
        x_true: the truth ``[B, *data_shape]``.
        mask: True = observed, shape of ``x_true`` (or of one item); hidden entries are ~mask.
        levels: nominal levels in (0, 1).

    References:
        Gneiting, Balabdaoui & Raftery, "Probabilistic forecasts, calibration and
        sharpness", 2007.
    """
    hidden = _hidden(x_true, mask)
    _check_samples(samples, x_true, 2)
    if not levels or not all(isinstance(v, int | float) and 0 < v < 1 for v in levels):
        raise CondVAEError(f"levels: expected nominal levels in (0, 1), got {levels!r}")
    levels = tuple(float(v) for v in levels)
    level = torch.tensor(levels, dtype=samples.dtype, device=samples.device)
    probs = torch.cat([(1 - level) / 2, (1 + level) / 2]).double()
    # Linear interpolation between order statistics (torch.quantile's default), by hand because
    # torch.quantile refuses inputs of more than 2^24 values (1000 samples of 16 MNIST digits).
    ordered = torch.sort(samples.flatten(1).double(), dim=0).values  # [K, B * D]
    position = probs * (samples.shape[0] - 1)
    below = position.floor().long()
    above = (below + 1).clamp_max(samples.shape[0] - 1)
    frac = (position - below)[:, None]
    bounds = ordered[below] + frac * (ordered[above] - ordered[below])  # [2L, B * D]
    y = x_true.to(samples.device).flatten().double()
    low, high = bounds[: len(levels)], bounds[len(levels) :]
    inside = ((low <= y) & (y <= high)).reshape(len(levels), *x_true.shape).float()  # [L, B, ...]
    hidden = hidden.to(samples.device)
    per_query = torch.stack([_per_query(v, hidden) for v in inside], -1)
    count = int(hidden.sum())
    overall = torch.where(hidden, inside, torch.zeros_like(inside)).flatten(1).sum(1) / count
    return IntervalCoverage(levels, per_query, overall, count)


def pit(samples: torch.Tensor, x_true: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Randomised probability integral transform of every hidden entry, ``[B, *data_shape]``.

    With K samples x_k of an entry whose truth is y, n_< = #{x_k < y}, n_= = #{x_k = y} and
    V ~ U(0, 1) (seeded),

        u = (n_< + V (n_= + 1)) / (K + 1)

    the randomised rank of y among the samples: exactly U(0, 1) when y is exchangeable with
    the samples (a calibrated sampler), also for discrete values where ties are common.
    Observed entries are NaN; ``values[~mask]`` is the flat list. A U-shaped histogram means
    overconfident, a hump underconfident, a slope biased.

    References:
        Dawid, "Statistical theory: the prequential approach", 1984.
        Czado, Gneiting & Held, "Predictive model assessment for count data", 2009 (the
        randomised PIT for discrete predictions).
        Hamill, "Interpretation of rank histograms for verifying ensemble forecasts", 2001.
    """
    hidden = _hidden(x_true, mask)
    _check_samples(samples, x_true)
    y = x_true.to(samples.device)
    below = (samples < y).sum(0)
    ties = (samples == y).sum(0)
    gen = generator(seed, "metrics/pit")
    v = torch.rand(x_true.shape, generator=gen, dtype=torch.float64).to(samples.device)
    u = (below.double() + v * (ties.double() + 1)) / (samples.shape[0] + 1)
    return torch.where(hidden.to(samples.device), u, torch.full_like(u, math.nan)).float()


def pit_histogram(
    samples: torch.Tensor, x_true: torch.Tensor, mask: torch.Tensor, bins: int = 10, seed: int = 0
) -> torch.Tensor:
    """Fractions of the hidden entries' PIT values (``pit``) in ``bins`` equal bins of [0, 1],
    ``[bins]``; each is 1 / bins for a calibrated sampler."""
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise CondVAEError(f"bins: expected a positive integer, got {bins!r}")
    u = pit(samples, x_true, mask, seed)
    u = u[~torch.isnan(u)]
    if not len(u):
        raise CondVAEError("mask: no hidden entries (~mask) to build a PIT histogram from")
    index = (u * bins).long().clamp_max(bins - 1)
    return torch.bincount(index, minlength=bins).float() / len(u)


def crps(samples: torch.Tensor, x_true: torch.Tensor, mask: torch.Tensor, fair: bool = True) -> torch.Tensor:
    """Continuous ranked probability score per query, averaged over its hidden entries, ``[B]``.

    For the predictive distribution F of an entry (its K samples) and the truth y,

        CRPS(F, y) = E|X - y| - 1/2 E|X - X'|,   X, X' ~ F independent

    (lower is better; a strictly proper score). Estimated by (1/K) sum_k |x_k - y| -
    1/(2 K (K - 1)) sum_{k != l} |x_k - x_l|, unbiased for the CRPS of the sampler's
    distribution (``fair=False``: 1 / (2 K^2), the CRPS of the empirical distribution of the
    samples). The pair sum is computed from the sorted samples in O(K log K):
    sum_{k<l} |x_(l) - x_(k)| = sum_k (2k - K + 1) x_(k), k = 0..K-1. NaN for a query with
    nothing hidden.

    References:
        Gneiting & Raftery, "Strictly proper scoring rules, prediction, and estimation", 2007.
        Ferro, "Fair scores for ensemble forecasts", 2014 (the unbiased K(K-1) form).
    """
    hidden = _hidden(x_true, mask)
    _check_samples(samples, x_true, 2 if fair else 1)
    k = samples.shape[0]
    x = samples.double()
    y = x_true.to(samples.device).double()
    y = torch.where(hidden.to(samples.device), y, torch.zeros_like(y))  # keep NaN out of the sums
    to_truth = (x - y).abs().mean(0)
    weight = (2 * torch.arange(k, device=x.device, dtype=x.dtype) - k + 1).reshape(k, *[1] * y.dim())
    pairs = 2 * (torch.sort(x, dim=0).values * weight).sum(0)  # sum over k != l of |x_k - x_l|
    spread = pairs / (2 * k * (k - 1)) if fair else pairs / (2 * k**2)
    return _per_query(to_truth - spread, hidden.to(samples.device)).float()


def _check_probability(prob: torch.Tensor, x_true: torch.Tensor, hidden: torch.Tensor) -> None:
    if not isinstance(prob, torch.Tensor) or prob.shape != x_true.shape:
        raise CondVAEError(f"prob: expected shape {list(x_true.shape)} (that of x_true), got {_shape(prob)}")
    hidden = hidden.to(prob.device)
    p, y = prob[hidden], x_true.to(prob.device)[hidden]
    if torch.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise CondVAEError("prob: expected probabilities in [0, 1] on the hidden entries")
    if not ((y == 0) | (y == 1)).all():
        raise CondVAEError("x_true: expected binary values (0 or 1) on the hidden entries")


def brier_score(prob: torch.Tensor, x_true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Brier score per query over its hidden binary entries, ``[B]``:

        BS = (1 / N_b) sum_{d hidden} (p_d - y_d)^2

    with p_d the predicted probability that entry d is 1 (e.g. the mean over samples z of the
    decoder's Bernoulli mean, ``vae.decode(post.sample(K)).mean.mean(0)``); lower is better,
    0.25 for always saying 1/2. NaN for a query with nothing hidden.

    References:
        Brier, "Verification of forecasts expressed in terms of probability", 1950.
    """
    hidden = _hidden(x_true, mask)
    _check_probability(prob, x_true, hidden)
    y = x_true.to(prob.device).double()
    return _per_query((prob.double() - y) ** 2, hidden.to(prob.device)).float()


def expected_calibration_error(
    prob: torch.Tensor, x_true: torch.Tensor, mask: torch.Tensor, bins: int = 10
) -> float:
    """Expected calibration error of predicted probabilities of binary hidden entries.

    All hidden entries of all queries are pooled and put in ``bins`` equal-width bins of
    [0, 1] by their predicted probability p that the entry is 1 (p = 1 in the last bin):

        ECE = sum_j (n_j / N) | mean_{d in bin j} y_d - mean_{d in bin j} p_d |

    0 for calibrated probabilities (up to sampling noise of order sqrt(p (1 - p) / n_j)).

    References:
        Naeini, Cooper & Hauskrecht, "Obtaining well calibrated probabilities using Bayesian
        binning", 2015.
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", 2017.
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise CondVAEError(f"bins: expected a positive integer, got {bins!r}")
    hidden = _hidden(x_true, mask)
    _check_probability(prob, x_true, hidden)
    hidden = hidden.to(prob.device)
    p, y = prob[hidden].double(), x_true.to(prob.device)[hidden].double()
    if not len(p):
        raise CondVAEError("mask: no hidden entries (~mask) to score")
    index = (p * bins).long().clamp_max(bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    gap = torch.bincount(index, weights=y - p, minlength=bins).abs()  # n_j |mean y - mean p|
    return float(gap.sum() / count.sum())
