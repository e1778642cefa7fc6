"""Every conditioning method against exact answers (linear-Gaussian closed forms, 2-d grid)."""

from __future__ import annotations

import math
import re
import time
import warnings

import pytest
import torch
from torch.distributions import Distribution

from condvae import MLPVAE, LinearGaussianVAE, wrap
from condvae.conditioning import METHODS, condition
from condvae.conditioning.base import Query
from condvae.conditioning.mixture import tempered_starts
from condvae.conditioning.variational import CrossCoder
from condvae.errors import ConditioningWarning, CondVAEError
from condvae.metrics import exact_query_log_likelihood, mmd


@pytest.fixture(scope="module")
def oracle() -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor]:
    """A 2-d linear-Gaussian VAE on 8 dims and 12 queries with random masks."""
    torch.manual_seed(0)
    model = LinearGaussianVAE.random(data_dim=8, latent_dim=2, noise=0.5, seed=1).requires_grad_(False)
    with torch.no_grad():
        x = model.decode(torch.randn(12, 2)).sample()
    mask = torch.rand(12, 8) < 0.5
    mask[:, 0] = True  # at least one observed dim
    mask[:, 1] = False  # at least one query dim
    return model, x, mask


def _standardised_errors(model, x, mask, z):  # type: ignore[no-untyped-def]
    """Largest |mean error| and covariance error in units of the exact posterior's std."""
    exact = model.posterior(x, mask)
    std = exact.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    mean_err = ((z.mean(0) - exact.mean) / std).abs().max()
    centred = z - z.mean(0)
    cov = torch.einsum("nbi,nbj->bij", centred, centred) / (z.shape[0] - 1)
    cov_err = ((cov - exact.covariance_matrix) / (std[:, :, None] * std[:, None, :])).abs().max()
    return float(mean_err), float(cov_err)


def test_gvi_recovers_the_closed_form_posterior(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method="gvi", steps=800, samples=32)
    q, exact = post.distribution(), model.posterior(x, mask)
    with torch.no_grad():
        delta = q.mean - exact.mean
        maha = torch.einsum("bi,bij,bj->b", delta, exact.precision_matrix, delta).sqrt()
        kl = torch.distributions.kl_divergence(q, exact)
    assert float(maha.max()) < 0.15  # mean within 0.15 posterior standard deviations
    assert float(kl.max()) < 0.02  # covariance: KL(q || exact) of a few hundredths of a nat
    gap = model.log_evidence(x, mask) - post.c_elbo(4000)
    assert float(gap.abs().max()) < 0.03


def test_meanfield_reaches_its_known_optimum(oracle) -> None:  # type: ignore[no-untyped-def]
    """For a Gaussian target the mean-field optimum has the exact mean and variances 1/Lambda_ii."""
    model, x, mask = oracle
    post = condition(model, x, mask, method="meanfield", steps=800, samples=32)
    exact = model.posterior(x, mask)
    with torch.no_grad():
        var = 1 / exact.precision_matrix.diagonal(dim1=-2, dim2=-1)
        q = post.distribution()
        assert float(((q.mean - exact.mean) / var.sqrt()).abs().max()) < 0.15
        assert float((q.variance / var - 1).abs().max()) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "options", "tolerance"),
    [
        ("hmc", {"chains": 8, "warmup": 300, "draws": 500}, 0.2),
        ("rejection", {"budget": 10_000_000}, 0.15),
        ("grid", {}, 0.15),
    ],
)
def test_samplers_match_the_closed_form_moments(oracle, method: str, options: dict, tolerance: float) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method=method, **options)
    z = post.sample(4000)
    assert z.shape == (4000, 12, 2)
    mean_err, cov_err = _standardised_errors(model, x, mask, z)
    # Monte Carlo error of 4000 draws (fewer effective ones for MCMC and SIR) is a few 0.01 std.
    assert mean_err < tolerance and cov_err < 2 * tolerance, (mean_err, cov_err)


def test_importance_matches_the_closed_form_moments(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    # With a cross-coder as proposal the weights are nearly flat: tight moments.
    proposal = condition(model, x, mask, method="gvi", steps=300)
    post = condition(model, x, mask, method="importance", particles=20000, proposal=proposal)
    assert float(post.ess.min()) > 10000
    mean_err, cov_err = _standardised_errors(model, x, mask, post.sample(4000))
    assert mean_err < 0.15 and cov_err < 0.3, (mean_err, cov_err)
    # The default proposal (encoder on the zero-filled evidence + prior) is worse; its error
    # must still be within what its effective sample size allows.
    with pytest.warns(ConditioningWarning, match="importance: effective sample size below 200 of 20000"):
        post = condition(model, x, mask, method="importance", particles=20000)
    ess = float(post.ess.min())
    mean_err, _ = _standardised_errors(model, x, mask, post.sample(4000))
    assert ess > 20 and mean_err < 4 / math.sqrt(ess) + 0.05, (mean_err, ess)


def test_hmc_diagnostics(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method="hmc", chains=2, warmup=200, draws=50, target_accept=0.8)
    d = post.diagnostics
    assert d.acceptance_rate.shape == (12,) and float(d.acceptance_rate.min()) > 0.6
    assert int(d.divergences.sum()) == 0 and (d.step_size > 0).all()


@pytest.mark.slow
def test_rejection_and_importance_estimate_the_evidence(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    exact = model.log_evidence(x, mask)
    rejection = condition(model, x, mask, method="rejection", budget=10_000_000)
    rejection.sample(2000)
    assert float((rejection.log_evidence() - exact).abs().max()) < 0.1
    proposal = condition(model, x, mask, method="planar", steps=300)
    importance = condition(model, x, mask, method="importance", particles=20000, proposal=proposal)
    assert float((importance.log_evidence() - exact).abs().max()) < 0.01


def test_rejection_stops_at_its_budget(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method="rejection", budget=300, samples=None)  # no fit-time pilot
    with pytest.raises(CondVAEError, match=r"rejection: query \d+ accepted \d+ of 5000 samples in 300"):
        post.sample(5000)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "tolerance"), [("planar", 0.05), ("gvi", 0.05), ("spline", 0.1), ("mixture", 0.1)]
)
def test_flows_reach_the_evidence(oracle, method: str, tolerance: float) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method=method, steps=600, samples=32)
    gap = model.log_evidence(x, mask) - post.c_elbo(4000)
    assert float(gap.max()) < tolerance and float(gap.min()) > -0.03  # a bound, up to MC error


def test_grid_is_exact_on_the_oracle(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    grid = condition(model, x, mask, method="grid")
    torch.testing.assert_close(grid.log_evidence(), model.log_evidence(x, mask).detach(), atol=2e-3, rtol=0)
    exact_y = model.query_log_likelihood(x, mask).detach()
    torch.testing.assert_close(grid.exact_query_log_likelihood(x), exact_y, atol=2e-3, rtol=0)
    torch.testing.assert_close(exact_query_log_likelihood(model, x, mask), exact_y)


def test_query_log_likelihood_with_a_proposal_is_the_same_integral() -> None:
    """Sparse evidence in 8 latent dimensions and a sharp likelihood: plain draws from q almost
    never land where y is likely, so the plain estimate falls far below log ∫ p(y|z) q(z) dz
    (the closed form for a Gaussian q); the importance-sampled one with the full item's
    posterior as proposal matches it."""
    model = LinearGaussianVAE.random(data_dim=60, latent_dim=8, noise=0.1, seed=2).requires_grad_(False)
    with torch.no_grad():
        x = model.decode(torch.randn(6, 8, generator=torch.Generator().manual_seed(0))).sample()
    mask = torch.zeros(6, 60, dtype=torch.bool)
    mask[:, :4] = True
    post = condition(model, x, mask, method="gvi", steps=300)
    q = post.distribution()
    u = ~mask[0]
    w, sigma = model.weight[u], model.noise_scale()[u]
    predictive = torch.distributions.MultivariateNormal(
        q.mean @ w.T + model.bias[u], w @ q.covariance_matrix @ w.T + torch.diag(sigma**2)
    )
    closed = predictive.log_prob(x[:, u])
    plain = post.query_log_likelihood(x, 2000)
    weighted = post.query_log_likelihood(x, 2000, proposal=model.encode(x))
    assert float((closed - plain).min()) > 3  # the plain estimator's bias that the proposal removes
    assert float((weighted - closed).abs().max()) < 0.1
    with pytest.raises(CondVAEError, match="proposal: expected batch shape"):
        post.query_log_likelihood(x, 100, proposal=model.encode(x[:2]))
    with pytest.raises(CondVAEError, match="draws by resampling"):
        condition(model, x, mask, method="gvi", steps=5, iw=4).query_log_likelihood(
            x, 100, proposal=model.encode(x)
        )
    with pytest.raises(CondVAEError, match="proposal: needs a method that scores arbitrary z"):
        condition(model, x, mask, method="hmc", warmup=5, draws=5).query_log_likelihood(
            x, 100, proposal=model.encode(x)
        )


def test_planar_layers_stay_invertible(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method="planar", layers=8, steps=300, lr=0.2)
    planar = [layer for layer in post.flow if hasattr(layer, "u_hat")]
    assert len(planar) == 8
    assert min(float((layer.w * layer.u_hat()).sum(-1).min()) for layer in planar) > -1.0
    _, log_q = post.sample_and_log_prob(10)
    assert torch.isfinite(log_q).all()


class Folded(torch.nn.Module):
    """A decoder symmetric in z_1 (it sees |z_1|): p(z | x_o) has two mirror-image modes."""

    def __init__(self, at: float = 1.5) -> None:
        super().__init__()
        self.linear, self.at = torch.nn.Linear(2, 10), at

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 4 * self.linear(torch.stack([z[..., 0].abs() - self.at, z[..., 1]], -1))


def _folded(at: float) -> tuple:  # type: ignore[type-arg]
    torch.manual_seed(0)
    vae = wrap(Folded(at), latent_dim=2, data_shape=(10,))
    with torch.no_grad():
        x = vae.decode(torch.tensor([[at, 0.0]])).sample()
    return vae, x, torch.tensor([[True] * 8 + [False] * 2])


def test_mixture_finds_both_modes() -> None:
    vae, x, mask = _folded(1.5)
    z = condition(vae, x, mask, method="mixture", steps=600).sample(2000)[:, 0]
    right = float((z[:, 0] > 0).float().mean())
    assert 0.3 < right < 0.7, right  # mass on both sides, as the exact posterior has
    grid = condition(vae, x, mask, method="grid").sample(2000)[:, 0]
    middle = float((z[:, 0].abs() < 0.75).float().mean())
    assert middle < float((grid[:, 0].abs() < 0.75).float().mean()) + 0.05  # two modes, not one blur


def test_mixture_starts_in_every_mode() -> None:
    """Modes at z_1 = +-2.5, where few prior draws land: the tempered starts sit in both,
    distinct from each other, and more likely than prior draws on average."""
    vae, x, mask = _folded(2.5)
    query = Query(vae, x, mask)
    starts = tempered_starts(query, 8)
    prior = query.stream("test/prior").normal(1000, 2)
    assert (starts[:, 0, 0] > 1.5).any() and (starts[:, 0, 0] < -1.5).any(), starts[:, 0]
    assert len(torch.unique(starts[:, 0], dim=0)) >= 6
    with torch.no_grad():
        gain = query.log_joint(starts).mean() - query.log_joint(prior).mean()
    assert float(gain) > 1.5, float(gain)
    fitted = condition(vae, x, mask, method="mixture", steps=300, init="tempered").sample(2000)[:, 0]
    assert 0.3 < float((fitted[:, 0] > 0).float().mean()) < 0.7
    with pytest.raises(CondVAEError, match="init: expected one of prior, tempered"):
        condition(vae, x, mask, method="mixture", init="kmeans")


def test_mmd_separates_and_matches() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 3, 2, generator=gen)
    b = torch.randn(400, 3, 2, generator=gen)
    c = torch.randn(400, 3, 2, generator=gen) + torch.tensor([0.0, 0.5, 2.0])[:, None]
    same, shifted = mmd(a, b), mmd(a, c)
    assert float(same.abs().max()) < 0.01
    assert float(shifted[1]) > 0.02 and float(shifted[2]) > float(shifted[1])


@pytest.mark.slow
def test_planar_is_close_to_the_grid_on_a_2d_decoder() -> None:
    """A nonlinear (MLP, Bernoulli) decoder with a 2-d latent: MMD of each method to the grid."""
    torch.manual_seed(0)
    vae = MLPVAE((12,), latent_dim=2, hidden=[16])
    with torch.no_grad():
        x = vae.decode(torch.randn(6, 2)).sample()
    mask = torch.zeros(6, 12, dtype=torch.bool)
    mask[:, :6] = True
    grid = condition(vae, x, mask, method="grid")
    reference = grid.sample(500)
    scores = {}
    for method in ["planar", "mixture", "gvi", "spline", "fcn", "hmc", "importance", "rejection"]:
        post = condition(vae, x, mask, method=method)
        scores[method] = mmd(post.sample(500), reference).mean().item()
    noise_floor = mmd(grid.sample(500), reference).mean().item()
    assert scores["planar"] < noise_floor + 0.01, scores
    assert scores["rejection"] < noise_floor + 0.005, scores
    print("MMD to the grid posterior:", scores, "grid vs itself:", noise_floor)


# -- bad input -----------------------------------------------------------------------------
def test_bad_input(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    with pytest.raises(CondVAEError, match=r"mask: expected the shape of x \[12, 8\], got \[12, 7\]"):
        condition(model, x, mask[:, :7])
    with pytest.raises(CondVAEError, match="mask: query 0 observes every dimension"):
        condition(model, x, torch.ones_like(mask))
    bad = x.clone()
    bad[2, 0] = math.nan
    with pytest.raises(CondVAEError, match="x: query 2 has NaN values in its evidence"):
        condition(model, bad, mask)
    unobserved_nan = x.clone()
    unobserved_nan[~mask] = math.nan  # unknown values may be NaN: they are never read
    assert condition(model, unobserved_nan, mask, method="gvi", steps=5).sample(2).isfinite().all()
    with pytest.raises(CondVAEError, match="method: unknown 'vi'"):
        condition(model, x, mask, method="vi")
    with pytest.raises(CondVAEError, match=r"options: \['layers'\] not known to method 'gvi'"):
        condition(model, x, mask, method="gvi", layers=3)
    with pytest.raises(CondVAEError, match="mask: expected booleans"):
        condition(model, x, mask.float() * 2)
    with pytest.raises(CondVAEError, match="grid' needs a 2-d latent"):
        condition(
            LinearGaussianVAE.random(5, 3),
            torch.zeros(1, 5),
            torch.tensor([[True, False] * 2 + [True]]),
            method="grid",
        )
    binary = MLPVAE((4,), latent_dim=2, hidden=[4])
    with pytest.raises(CondVAEError, match="x: bernoulli likelihood expects binary values"):
        condition(binary, torch.full((1, 4), 0.5), torch.tensor([[True, False, True, False]]))
    with pytest.raises(CondVAEError, match="steps: expected a positive integer"):
        condition(model, x, mask, method="gvi", steps=0)


def test_observing_nothing_gives_the_prior(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = oracle
    nothing = torch.zeros(2, 8, dtype=torch.bool)
    post = condition(model, x[:2], nothing, method="gvi", steps=300)
    assert "posterior is the prior" in post.diagnostics["note"]
    q = post.distribution()
    assert float(q.mean.abs().max()) < 0.1 and float((q.covariance_matrix - torch.eye(2)).abs().max()) < 0.1


def test_exact_reference_for_a_larger_latent() -> None:
    """The IS reference of log p(y | x_o) (latent > 2) against the linear-Gaussian closed form."""
    model = LinearGaussianVAE.random(data_dim=10, latent_dim=3, noise=0.5, seed=6).requires_grad_(False)
    torch.manual_seed(0)
    with torch.no_grad():
        x = model.decode(torch.randn(4, 3)).sample()
    mask = torch.rand(4, 10) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    wrapped = wrap(
        LinearDecoderForTest(model),
        latent_dim=3,
        data_shape=(10,),
        likelihood="gaussian",
        encoder=ExactEncoderForTest(model),
    )
    estimate = exact_query_log_likelihood(wrapped, x, mask, particles=20000)
    torch.testing.assert_close(estimate, model.query_log_likelihood(x, mask), atol=0.05, rtol=0)


class LinearDecoderForTest(torch.nn.Module):
    def __init__(self, oracle: LinearGaussianVAE) -> None:
        super().__init__()
        self.oracle = oracle

    def forward(self, z: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(
            z @ self.oracle.weight.T + self.oracle.bias, self.oracle.noise_scale()
        )


class ExactEncoderForTest(torch.nn.Module):
    def __init__(self, oracle: LinearGaussianVAE) -> None:
        super().__init__()
        self.oracle = oracle

    def forward(self, x: torch.Tensor) -> torch.distributions.Distribution:
        return self.oracle.posterior(x)


# -- samplers that fail early and say so (issue 11) ----------------------------------------
@pytest.fixture(scope="module")
def much_evidence() -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor]:
    """6-d latent, 40 sharp dims, ~80% observed: the prior is a hopeless proposal (p(x_o) / M ~ 1e-11)."""
    model = LinearGaussianVAE.random(data_dim=40, latent_dim=6, noise=0.1, seed=1).requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = model.decode(torch.randn(12, 6, generator=gen)).mean
    mask = torch.rand(12, 40, generator=gen) < 0.8
    mask[:, 1] = False
    return model, x, mask


def test_importance_warns_once_naming_the_queries_with_a_low_ess(much_evidence) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = much_evidence
    with pytest.warns(ConditioningWarning) as caught:
        post = condition(model, x, mask, method="importance", particles=2000, proposal="prior")
    ours = [w for w in caught if issubclass(w.category, ConditioningWarning)]
    assert len(ours) == 1  # one warning for the whole batch
    message = str(ours[0].message)
    assert ours[0].filename == __file__  # points at the caller's condition() line
    d = post.diagnostics
    assert d.min_ess == 20  # the default: 1% of 2000 particles
    low = (post.ess < 20).nonzero().flatten().tolist()
    assert len(low) > 5 and sorted(d.low_ess) == low
    assert all(d.low_ess[i] == pytest.approx(float(post.ess[i])) for i in low)
    # The first five are named with their ESS, the rest counted; a remedy is suggested.
    named = [int(i) for i in re.findall(r"(\d+) \(ESS [\d.e+-]+\)", message)]
    assert named == low[:5] and f"and {len(low) - 5} more" in message
    assert message.startswith("importance: effective sample size below 20 of 2000 particles")
    assert "particles" in message and "proposal" in message and "hmc" in message
    assert "\n" not in message
    with warnings.catch_warnings():  # min_ess=0 turns the check off
        warnings.simplefilter("error", ConditioningWarning)
        quiet = condition(model, x, mask, method="importance", particles=2000, proposal="prior", min_ess=0)
    assert quiet.diagnostics.low_ess == {}


def test_importance_is_quiet_when_the_proposal_is_good(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    proposal = condition(model, x, mask, method="gvi", steps=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        post = condition(model, x, mask, method="importance", particles=5000, proposal=proposal)
    assert post.diagnostics.low_ess == {} and float(post.ess.min()) > post.diagnostics.min_ess
    with pytest.raises(CondVAEError, match=r"^min_ess: expected a non-negative"):
        condition(model, x, mask, method="importance", min_ess=-1)


class PartialEncoderVAE(LinearGaussianVAE):
    """A model whose encoder reads (x_o, mask) natively: here the exact posterior p(z | x_o)."""

    def encode(self, x: torch.Tensor) -> Distribution:
        raise AssertionError("importance must use encode_partial when the model has it")

    def encode_partial(self, x: torch.Tensor, mask: torch.Tensor) -> Distribution:
        assert not torch.isnan(x).any(), "unobserved values must not reach the encoder as NaN"
        return self.posterior(x, mask)


def test_importance_uses_encode_partial(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    partial = PartialEncoderVAE((8,), latent_dim=2).requires_grad_(False)
    partial.load_state_dict(model.state_dict())
    unknown = x.clone()
    unknown[~mask] = math.nan  # allowed: unobserved values are never read
    post = condition(partial, unknown, mask, method="importance", particles=2000, defensive=0.0)
    # The proposal is the exact posterior: every weight is p(x_o), the ESS all the particles.
    assert float(post.ess.min()) > 1999
    torch.testing.assert_close(post.log_evidence(), model.log_evidence(x, mask), atol=1e-3, rtol=0)


def test_rejection_refuses_a_hopeless_request_at_fit_time(much_evidence) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = much_evidence
    start = time.perf_counter()
    with pytest.raises(CondVAEError) as error:
        condition(model, x, mask, method="rejection", budget=200_000, samples=500)
    seconds = time.perf_counter() - start
    message = str(error.value)
    assert "\n" not in message and message.startswith("budget: rejection cannot give query ")
    assert "samples=500" in message and "budget=200000" in message
    assert re.search(r"rate is below [\d.e-]+", message), message
    assert re.search(r"needs more than [\d.e+]+ proposals, more than [\d.]+ (s|min|h|days|years)", message)
    assert re.search(r"at the measured [\d.e+]+ proposals/s", message) and "hmc" in message
    # The pilot spent at most a tenth of the budget (4096 to 20,000 proposals, not 200,000).
    pilot = int(re.search(r"(\d+) pilot proposals", message).group(1))  # type: ignore[union-attr]
    assert pilot <= 20_000
    assert seconds < 10  # in CI about a second, most of it finding the bound M


def test_rejection_measures_the_rate_it_refuses_with(oracle) -> None:  # type: ignore[no-untyped-def]
    """One query whose rate the pilot can measure (~0.03): the message gives it, close to exact."""
    model, x, mask = oracle
    x, mask = x[1:2], mask[1:2]
    bound = condition(model, x, mask, method="rejection", samples=None).log_bound
    exact = float((model.log_evidence(x, mask) - bound).exp())
    with pytest.raises(CondVAEError, match=r"^budget: rejection cannot give query 0 samples=1000") as error:
        condition(model, x, mask, method="rejection", budget=10_000)
    found = re.search(
        r"acceptance rate is about ([\d.e+-]+) \(\d+ accepts expected in (\d+)\)", str(error.value)
    )
    assert found, str(error.value)
    rate, n = float(found.group(1)), int(found.group(2))
    assert abs(rate - exact) < 3 * math.sqrt(exact / n) + 0.05 * exact, (rate, exact)
    assert re.search(r"needs about [\d.e+]+ proposals, about [\d.]+ (s|min)", str(error.value))


def test_rejection_pilot_on_an_easy_case(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method="rejection", budget=1_000_000)  # samples=1000 by default
    d = post.diagnostics
    exact = (model.log_evidence(x, mask) - post.log_bound).exp()
    assert d.pilot_acceptance_rate.shape == (12,) and d.pilot_rate_bounds.shape == (12, 2)
    lower, upper = d.pilot_rate_bounds.unbind(-1)
    # Stopped once every query was shown to reach 1000 draws, well before its cap of 100,000.
    assert bool((lower * 1_000_000 >= 1000).all()) and d.pilot_proposals < 100_000
    assert bool(((lower <= exact) & (exact <= upper)).all()), (lower, exact, upper)
    error = (d.pilot_acceptance_rate - exact).abs() / (exact / d.pilot_proposals).sqrt()
    assert float(error.max()) < 4  # within 4 standard errors (sqrt(a / n) bounds the estimator's)
    z = post.sample(1000)
    assert z.shape == (1000, 12, 2) and d.proposals > 0
    with pytest.raises(CondVAEError, match=r"^samples: expected a positive number"):
        condition(model, x, mask, method="rejection", samples=0)


IW_METHODS = sorted(name for name, cls in METHODS.items() if issubclass(cls, CrossCoder) and name != "semi")


@pytest.mark.parametrize("method", IW_METHODS)
def test_every_cross_coder_takes_the_importance_weighted_objective(oracle, method: str) -> None:  # type: ignore[no-untyped-def]
    """C-ELBO_K is a bound that K = 1 never exceeds on average, and the fit's draws are the
    resampled ones: on the 2-d linear-Gaussian posterior they have its moments."""
    model, x, mask = oracle
    options = {"components": 2} if method == "mixture" else {}
    post = condition(model, x, mask, method=method, steps=400, samples=64, iw=8, **options)
    assert post.diagnostics.iw == 8 and post.diagnostics.samples == 64
    trace = post.diagnostics.c_elbo_trace
    assert trace.shape == (400, 12) and bool(torch.isfinite(trace).all())
    if not post.diagnostics.guaranteed_bound:  # fcn's map is not one to one: no bound to check
        return
    z, log_q = post.sample_and_log_prob(8 * 1000)
    log_w = (post.query.log_joint(z) - log_q).unflatten(0, (1000, 8))
    bound = (torch.logsumexp(log_w, 1) - math.log(8)).mean(0)
    error = bound - model.log_evidence(x, mask)
    assert float(error.max()) < 0.02 and float(error.min()) > -0.2, error  # a tight lower bound
    mean_err, cov_err = _standardised_errors(model, x, mask, post.sample(4000))
    assert mean_err < 0.25 and cov_err < 0.3, (mean_err, cov_err)


def test_resampling_repairs_a_mean_field_fit(oracle) -> None:  # type: ignore[no-untyped-def]
    """Mean field cannot hold the posterior's correlation; K = 16 resampled draws recover most of it."""
    model, x, mask = oracle
    plain = condition(model, x, mask, method="meanfield", steps=300)
    weighted = condition(model, x, mask, method="meanfield", steps=300, iw=16)
    exact = model.posterior(x, mask).covariance_matrix
    corr = exact[:, 0, 1] / (exact[:, 0, 0] * exact[:, 1, 1]).sqrt()
    strong = corr.abs() > 0.3
    assert bool(strong.any())

    def correlation(z: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.corrcoef(z[:, b].T)[0, 1] for b in range(z.shape[1])])

    plain_err = (correlation(plain.sample(4000)) - corr)[strong].abs().mean()
    weighted_err = (correlation(weighted.sample(4000)) - corr)[strong].abs().mean()
    assert float(weighted_err) < 0.5 * float(plain_err), (weighted_err, plain_err)


def test_an_importance_weighted_bound_is_tighter(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    post = condition(model, x, mask, method="meanfield", steps=300)
    z, log_q = post.sample_and_log_prob(8 * 2000)
    log_w = (post.query.log_joint(z) - log_q).unflatten(0, (2000, 8))
    iw = (torch.logsumexp(log_w, 1) - math.log(8)).mean(0)
    assert bool((iw > log_w.mean((0, 1)) + 1e-3).all())
    assert bool((iw < model.log_evidence(x, mask) + 0.02).all())


def test_iw_must_be_a_positive_integer(oracle) -> None:  # type: ignore[no-untyped-def]
    model, x, mask = oracle
    with pytest.raises(CondVAEError, match="iw: expected a positive integer, got 0"):
        condition(model, x, mask, method="gvi", iw=0)
