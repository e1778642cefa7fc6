"""Calibration metrics against exact answers: linear-Gaussian conditionals and hand-computed cases.

Exact posterior completions of the linear-Gaussian oracle are drawn from its closed-form
conditional p(x_u | x_o) with x drawn from the model itself, so the truth is exchangeable with
the samples: coverage is nominal, the PIT uniform and the sample CRPS the Gaussian closed form.
A sampler with its spread halved (overconfident) must fail each of these clearly.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from scipy import stats

from condvae import LinearGaussianVAE
from condvae.errors import CondVAEError
from condvae.metrics import (
    brier_score,
    crps,
    expected_calibration_error,
    interval_coverage,
    pit,
    pit_histogram,
)

B, D, K = 500, 10, 1000


@functools.cache
def _oracle() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x drawn from the model, a random mask, the exact conditional mean and its Cholesky factor."""
    model = LinearGaussianVAE.random(data_dim=D, latent_dim=3, noise=0.5, seed=3).requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(B, 3, generator=gen)
    x = z @ model.weight.T + model.bias + model.noise_scale() * torch.randn(B, D, generator=gen)
    mask = torch.rand(B, D, generator=gen) < 0.5
    mask[:, 0], mask[:, 1] = True, False  # some evidence, and dim 1 always hidden
    with torch.no_grad():
        mean, cov = model.conditional(x, mask)
    # Observed rows and columns of cov are zero: a unit diagonal there makes it positive
    # definite without touching the hidden block (those draws are pasted over by the evidence).
    chol = torch.linalg.cholesky(cov.double() + torch.diag_embed(mask.double()))
    return x, mask, mean.double(), chol, cov.diagonal(dim1=-2, dim2=-1).double().sqrt()


@functools.cache
def _samples(scale: float = 1.0) -> torch.Tensor:
    """K completions per query: exact (scale 1) or with the spread scaled (0.5: overconfident)."""
    x, mask, mean, chol, _ = _oracle()
    gen = torch.Generator().manual_seed(1)
    eps = torch.randn(K, B, D, 1, generator=gen, dtype=torch.float64)
    draws = mean + scale * (chol @ eps).squeeze(-1)
    return torch.where(mask, x.double(), draws)


def _cluster_se(hits: torch.Tensor, hidden: torch.Tensor) -> float:
    """Standard error of the pooled fraction sum(hits) / sum(hidden), queries as clusters (the
    hidden dims of one query are correlated)."""
    h, n = (hits * hidden).flatten(1).sum(1).double(), hidden.flatten(1).sum(1).double()
    ratio = h.sum() / n.sum()
    return float(((h - ratio * n) ** 2).sum().sqrt() / n.sum())


def test_exact_samples_give_nominal_interval_coverage() -> None:
    x, mask, mean, _, std = _oracle()
    result = interval_coverage(_samples(), x, mask, levels=(0.5, 0.9))
    assert result.levels == (0.5, 0.9) and result.per_query.shape == (B, 2) and result.overall.shape == (2,)
    assert result.count == int((~mask).sum()) > 2000
    hidden = ~mask
    for j, level in enumerate(result.levels):
        # The same intervals, independently: the Gaussian quantile hits of each query's truth.
        half = stats.norm.ppf((1 + level) / 2)
        hits = (((x.double() - mean) / std.clamp_min(1e-12)).abs() <= half).double()
        se = _cluster_se(hits, hidden)
        assert abs(float(result.overall[j]) - level) < 3 * se + 2 / K, (level, result.overall, se)
        pooled = (result.per_query[:, j] * hidden.sum(1)).sum() / hidden.sum()
        torch.testing.assert_close(pooled, result.overall[j], rtol=1e-5, atol=1e-6)
    overconfident = interval_coverage(_samples(0.5), x, mask)
    # Halved spread: the 50% and 90% intervals hold only P(|Z| < 0.34) = 0.26 and P(|Z| < 0.82) = 0.59.
    assert float(overconfident.overall[0]) < 0.32 and float(overconfident.overall[1]) < 0.66


def test_exact_samples_give_a_uniform_pit() -> None:
    x, mask, *_ = _oracle()
    u = pit(_samples(), x, mask)
    assert u.shape == x.shape and torch.isnan(u[mask]).all() and not torch.isnan(u[~mask]).any()
    assert float(u[~mask].min()) > 0 and float(u[~mask].max()) < 1
    # Dim 1 is hidden in every query and queries are independent: an exact KS test.
    assert stats.kstest(u[:, 1].numpy(), "uniform").pvalue > 1e-3
    histogram = pit_histogram(_samples(), x, mask, bins=10)
    n = int((~mask).sum())
    assert histogram.shape == (10,) and abs(float(histogram.sum()) - 1) < 1e-6
    # 4 binomial standard errors, times 1.5 for the correlation of the hidden dims of one query
    # (it inflates the coverage's standard error above by about 1.1): 0.036 here, while the
    # overconfident sampler's end bins are off by 0.15.
    assert float((histogram - 0.1).abs().max()) < 4 * math.sqrt(0.1 * 0.9 / n) * 1.5
    over = pit(_samples(0.5), x, mask)
    assert stats.kstest(over[:, 1].numpy(), "uniform").pvalue < 1e-6
    over_histogram = pit_histogram(_samples(0.5), x, mask, bins=10)
    assert float(over_histogram[0] + over_histogram[-1]) > 0.4  # U-shaped: the truth in the tails


def test_pit_randomises_ties_and_is_seeded() -> None:
    """Discrete values: y ~ Bernoulli(0.3) and 20 samples of the same law per query. Without the
    randomisation of ties the PIT would pile up at a few values."""
    gen = torch.Generator().manual_seed(2)
    n = 4000
    x = (torch.rand(n, 2, generator=gen) < 0.3).float()
    samples = (torch.rand(20, n, 2, generator=gen) < 0.3).float()
    mask = torch.tensor([True, False])  # shared by every query
    u = pit(samples, x, mask, seed=5)[:, 1]
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    torch.testing.assert_close(pit(samples, x, mask, seed=5)[:, 1], u)
    assert not torch.equal(pit(samples, x, mask, seed=6)[:, 1], u)


def _gaussian_crps(mean: torch.Tensor, std: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CRPS(N(mean, std^2), y) = std [w (2 Phi(w) - 1) + 2 phi(w) - 1 / sqrt(pi)], w = (y - mean) / std."""
    w = (y - mean) / std
    normal = torch.distributions.Normal(0.0, 1.0)
    return std * (w * (2 * normal.cdf(w) - 1) + 2 * normal.log_prob(w).exp() - 1 / math.sqrt(math.pi))


def _expected_abs(mean: torch.Tensor, std: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """E|a - X| for X ~ N(mean, std^2)."""
    w = (a - mean) / std
    normal = torch.distributions.Normal(0.0, 1.0)
    return std * (w * (2 * normal.cdf(w) - 1) + 2 * normal.log_prob(w).exp())


def test_crps_matches_the_gaussian_closed_form() -> None:
    x, mask, mean, _, std = _oracle()
    samples, hidden = _samples(), ~mask
    estimate = crps(samples, x, mask).double()
    assert estimate.shape == (B,)
    safe = std.clamp_min(1e-12)
    exact = _gaussian_crps(mean, safe, x.double())
    exact = (exact * hidden).sum(1) / hidden.sum(1)
    # The estimator's error is, to first order (its Hoeffding projection), the mean over samples
    # of |X_k - y| - E'|X_k - X'|: a per-entry standard error, averaged over the query's dims
    # (an upper bound on the standard error of the average).
    h = (samples - x.double()).abs() - _expected_abs(mean, safe, samples)
    se = ((h.std(0) / math.sqrt(K)) * hidden).sum(1) / hidden.sum(1)
    z = (estimate - exact) / se
    assert float(z.abs().max()) < 5, float(z.abs().max())
    assert abs(float(z.mean()) * math.sqrt(B)) < 5  # no bias overall either
    over = crps(_samples(0.5), x, mask).double()
    # A strictly proper score: the overconfident sampler is worse, far beyond the noise.
    assert float((over - estimate).mean()) > 20 * float(se.mean()) / math.sqrt(B)


def test_crps_pair_sum_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(3)
    samples = torch.randn(7, 3, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(3, 4, generator=gen)
    mask = torch.tensor([[True, False, False, False], [False] * 4, [True, True, True, False]])
    pairs = (samples[:, None] - samples[None]).abs().sum((0, 1))
    for fair, denominator in [(True, 2 * 7 * 6), (False, 2 * 49)]:
        entry = (samples - x.double()).abs().mean(0) - pairs / denominator
        expected = (entry * ~mask).sum(1) / (~mask).sum(1)
        torch.testing.assert_close(crps(samples, x, mask, fair=fair), expected.float())


def test_brier_and_ece_by_hand() -> None:
    prob = torch.tensor([[0.1, 0.8, 0.6, 0.3], [0.95, 0.05, 0.5, 0.5]])
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    mask = torch.tensor([[False, False, False, True], [False, True, True, True]])
    # Hidden: query 0 has (0.1, 0), (0.8, 1), (0.6, 0); query 1 has (0.95, 1).
    torch.testing.assert_close(brier_score(prob, x, mask), torch.tensor([(0.01 + 0.04 + 0.36) / 3, 0.0025]))
    # 10 bins: every entry alone in its bin, |y - p| = 0.1, 0.2, 0.6, 0.05.
    assert expected_calibration_error(prob, x, mask) == pytest.approx((0.1 + 0.2 + 0.6 + 0.05) / 4)
    # 2 bins: [0, 0.5) holds 0.1 (y 0); [0.5, 1] holds 0.8, 0.6, 0.95 (y 1, 0, 1).
    low, high = abs(0 - 0.1), abs(2 / 3 - (0.8 + 0.6 + 0.95) / 3)
    assert expected_calibration_error(prob, x, mask, bins=2) == pytest.approx((low + 3 * high) / 4)
    one = torch.tensor([[1.0, 0.0]])  # p = 1 lands in the last bin, not past it
    assert (
        expected_calibration_error(one, torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2, dtype=torch.bool)) == 0
    )


def test_calibrated_probabilities_have_ece_near_zero() -> None:
    gen = torch.Generator().manual_seed(4)
    p = torch.rand(400, 500, generator=gen)
    y = (torch.rand(400, 500, generator=gen) < p).float()
    mask = torch.zeros(400, 500, dtype=torch.bool)
    # Noise only: about sum_j (n_j / N) sqrt(p_j (1 - p_j) / n_j) ~ 0.002 with 20,000 per bin.
    assert expected_calibration_error(p, y, mask) < 0.01
    # Squared probabilities are too low everywhere: ECE = E[p - p^2] = 1/6 (no sign changes).
    assert expected_calibration_error(p**2, y, mask) == pytest.approx(1 / 6, abs=0.01)
    # Brier score of calibrated probabilities: E[p (1 - p)] = 1/6.
    assert float(brier_score(p, y, mask).mean()) == pytest.approx(1 / 6, abs=0.005)


def test_bad_shapes_are_refused_in_one_line() -> None:
    x, mask, *_ = _oracle()
    samples = _samples()
    cases = [
        (lambda: interval_coverage(samples[:, :3], x, mask), r"^samples: expected shape \[K, 500, 10\]"),
        (lambda: interval_coverage(samples, x, mask[:, :3]), r"^mask: expected the shape of x_true"),
        (lambda: interval_coverage(samples, x, mask, levels=(0.5, 1.0)), r"^levels: expected"),
        (lambda: interval_coverage(samples[:1], x, mask), r"^samples: expected at least 2"),
        (lambda: pit(samples, x[0], mask), r"^(x_true|mask|samples): expected"),
        (lambda: pit_histogram(samples, x, mask, bins=0), r"^bins: expected a positive integer"),
        (lambda: crps(samples.flatten(2)[..., :5], x, mask), r"^samples: expected shape"),
        (lambda: brier_score(x[:, :3], x, mask), r"^prob: expected shape \[500, 10\]"),
        (lambda: brier_score(x, x, mask), r"^(prob: expected probabilities|x_true: expected binary)"),
        (lambda: brier_score(torch.full_like(x, 0.5), x, mask), r"^x_true: expected binary"),
        (lambda: expected_calibration_error(torch.full_like(x, 0.5), x, mask, bins=0), r"^bins:"),
    ]
    for call, pattern in cases:
        with pytest.raises(CondVAEError, match=pattern) as error:
            call()
        assert "\n" not in str(error.value)
    nan_truth = x.clone()
    nan_truth[~mask] = math.nan
    with pytest.raises(CondVAEError, match=r"^x_true: NaN on hidden entries"):
        crps(samples, nan_truth, mask)
    observed_nan = x.clone()
    observed_nan[mask] = math.nan  # the truth on observed entries is never read
    assert torch.isfinite(crps(samples, observed_nan, mask)).all()
