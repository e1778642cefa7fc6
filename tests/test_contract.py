"""The contract every registered method keeps, on tiny linear-Gaussian models.

Accuracy against exact answers lives in test_conditioning.py; this file checks what every
method must do whatever its accuracy. A method without a row in ``FAST`` fails here.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import pytest
import torch
from torch import nn
from virtual_device import counting_syncs, virtual_device

from condvae import METHODS, LinearGaussianVAE, condition
from condvae.conditioning.base import Posterior
from condvae.errors import CondVAEError
from condvae.partial.encoder import build_partial_encoder
from condvae.pyramid.model import PyramidVAE

# Fast options per method: enough to exercise it, not to make it accurate.
FAST: dict[str, dict[str, Any]] = {
    "meanfield": {"steps": 20},
    "gvi": {"steps": 20},
    "planar": {"steps": 20},
    "spline": {"steps": 3},
    "fcn": {"steps": 5},
    "mixture": {"steps": 10, "components": 3},
    "hmc": {"chains": 2, "warmup": 20, "draws": 20},
    "importance": {"particles": 500},
    "ais": {"particles": 8, "temperatures": 10},
    "rejection": {"budget": 100_000, "round_size": 2000, "samples": 16},
    "grid": {"size": 32},
    "ipa": {},
    "semi": {"steps": 5},
    "ipa-sir": {"particles": 200},
    "auto": {},
}
B = 5


@functools.cache
def _model(latent_dim: int) -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor]:
    model = LinearGaussianVAE.random(data_dim=6, latent_dim=latent_dim, noise=0.5, seed=1).requires_grad_(
        False
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = model.decode(torch.randn(B, latent_dim, generator=gen)).mean
    mask = torch.rand(B, 6, generator=gen) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    return model, x, mask


@functools.cache
def _encoder(latent_dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_partial_encoder(_model(latent_dim)[0]).eval()


def _setup(method: str) -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor, dict[str, Any]]:
    latent_dim = 2 if method == "grid" else 3
    options = dict(FAST[method])
    if method in ("ipa", "semi", "ipa-sir", "auto"):
        options["encoder"] = _encoder(latent_dim)
    return (*_model(latent_dim), options)


@functools.cache
def _fit(method: str, seed: int = 0, order: str = "batch") -> Posterior:
    """The fit of the whole batch, of query 2 ``alone`` or of the ``reversed`` batch."""
    model, x, mask, options = _setup(method)
    if order == "alone":
        x, mask = x[2:3], mask[2:3]
    elif order == "reversed":
        x, mask = x.flip(0), mask.flip(0)
    return condition(model, x, mask, method=method, seed=seed, **options)


@pytest.fixture(params=sorted(METHODS))
def method(request: pytest.FixtureRequest) -> str:
    if request.param not in FAST:
        pytest.fail(f"method {request.param!r} has no row in FAST")
    return request.param


def test_the_table_names_exactly_the_registered_methods() -> None:
    assert set(FAST) == set(METHODS)


def test_shapes_and_evidence_pasted_back(method: str) -> None:
    model, x, mask, _ = _setup(method)
    post = _fit(method)
    assert post.sample(4).shape == (4, B, model.latent_dim)
    completions = post.complete(3)
    assert completions.shape == (3, B, 6)
    assert torch.equal(completions[:, mask], x[mask].expand(3, -1))
    assert post.complete(2, mean=True).shape == (2, B, 6)
    assert post.diagnostics.method == method and post.diagnostics["seconds"] > 0


def test_a_query_does_not_depend_on_its_batch(method: str) -> None:
    together = _fit(method, seed=3).sample(16)
    alone = _fit(method, seed=3, order="alone").sample(16)
    reversed_ = _fit(method, seed=3, order="reversed").sample(16)
    torch.testing.assert_close(alone[:, 0], together[:, 2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reversed_[:, B - 1 - 2], together[:, 2], atol=1e-4, rtol=1e-4)


def test_same_seed_same_draws_other_seed_other_draws(method: str) -> None:
    model, x, mask, options = _setup(method)
    first, again, other = (condition(model, x, mask, method=method, seed=s, **options) for s in (3, 3, 4))
    draws = first.sample(16)
    torch.testing.assert_close(again.sample(16), draws)
    assert not torch.equal(other.sample(16), draws)
    assert not torch.equal(first.sample(16), draws)  # each sample() call reads a fresh block


def test_a_density_gives_a_finite_c_elbo_and_one_log_prob(method: str) -> None:
    post = _fit(method)
    if not post.has_density:
        with pytest.raises(CondVAEError, match="without a density"):
            post.c_elbo(10)
        return
    assert torch.isfinite(post.c_elbo(50)).all()
    z, log_q = post.sample_and_log_prob(8)
    try:
        scored = post.log_prob(z)
    except CondVAEError as error:  # a density only along its own samples (no inverse)
        assert "cannot score arbitrary z" in str(error)
        return
    torch.testing.assert_close(scored, log_q, atol=1e-3, rtol=1e-4)


def test_log_evidence_is_finite_or_refused(method: str) -> None:
    post = _fit(method)
    if type(post).log_evidence is Posterior.log_evidence:
        with pytest.raises(CondVAEError, match="does not estimate log p"):
            post.log_evidence()
    else:
        assert post.log_evidence().shape == (B,) and torch.isfinite(post.log_evidence()).all()


def test_the_docstring_lists_every_option(method: str) -> None:
    cls = METHODS[method]
    assert list(inspect.signature(cls.__init__).parameters)[2:] == cls.options(), "options are keyword-only"
    doc = cls.__doc__ or ""
    assert "Arguments:" in doc or not cls.options(), method
    missing = [name for name in cls.options() if f"{name}:" not in doc]
    assert not missing, f"{method}: options {missing} are not in its docstring"


def test_an_unknown_option_is_named(method: str) -> None:
    model, x, mask, _ = _setup(method)
    with pytest.raises(
        CondVAEError, match=rf"options: \['colour'\] not known to method '{method}' \(it takes"
    ):
        condition(model, x, mask, method=method, colour=1)


@pytest.mark.parametrize(
    ("vae", "got"),
    [
        (PyramidVAE((1, 16, 16), levels=1, latent_dims=[4], channels=[8], hidden=16), "PyramidVAE"),
        (torch.nn.Linear(2, 6), "Linear"),
        ("mnist-mlp-z2", "str"),
    ],
)
def test_condition_refuses_what_is_not_a_vae(vae: object, got: str) -> None:
    _, x, mask = _model(2)
    with pytest.raises(CondVAEError, match=rf"^vae: expected a VAE .*got {got} without [^\n]*$"):
        condition(vae, x, mask)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", ["a", 1.5, None])
def test_a_seed_that_is_not_an_integer_is_refused(seed: object) -> None:
    model, x, mask = _model(2)
    with pytest.raises(CondVAEError, match=r"^seed: expected an integer"):
        condition(model, x, mask, seed=seed)  # type: ignore[arg-type]


def _moved(options: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """``options`` with a copy of each module (a partial encoder) on ``device``."""
    return {k: copy.deepcopy(v).to(device) if isinstance(v, nn.Module) else v for k, v in options.items()}


def test_another_device_gives_the_same_answer_there(method: str) -> None:
    """On a second device (see virtual_device.py: CUDA's rules on mixing devices, the CPU's
    kernels), nothing is left on the CPU and the draws are the CPU's exactly, since every
    random stream is a hash computed where the model is."""
    model, x, mask, options = _setup(method)
    on_cpu = condition(model, x, mask, method=method, **options)  # fresh: each sample() reads a new block
    z, means = on_cpu.sample(4), on_cpu.complete(3, mean=True)
    with virtual_device() as device:
        moved = {
            k: copy.deepcopy(v).to(device) if isinstance(v, torch.nn.Module) else v
            for k, v in options.items()
        }
        post = condition(copy.deepcopy(model).to(device), x, mask, method=method, **moved)
        there = post.sample(4), post.complete(3, mean=True)
        assert [t.device for t in there] == [device, device]
        if post.has_density:
            assert post.c_elbo(16).device == device
        torch.testing.assert_close(there[0].cpu(), z, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(there[1].cpu(), means, atol=1e-5, rtol=1e-5)


# The option that sets how much work a fit does, where it has one: doubling it must not add reads
# of device values on the host (each one stalls a GPU's queue).
WORK = ("steps", "warmup", "temperatures", "particles", "budget", "size")


def host_reads(method: str, scale: int) -> tuple[str | None, int]:
    """The method's work option (None: one pass) and the reads of device values on the host in
    one fit of the queries above with that option times ``scale`` (benchmarks/host_reads.py)."""
    model, x, mask, options = _setup(method)
    work = next((name for name in WORK if name in options), None)
    if work is not None:
        options = {**options, work: options[work] * scale}
    with counting_syncs() as virtual:
        moved, vae = _moved(options, virtual.device), copy.deepcopy(model).to(virtual.device)
        before = virtual.syncs
        condition(vae, x, mask, method=method, **moved)
        return work, virtual.syncs - before


def test_a_longer_fit_asks_the_host_no_more_often(method: str) -> None:
    work, once = host_reads(method, 1)
    if work is None:
        pytest.skip(f"{method} has no option that sets its amount of work")
    twice = host_reads(method, 2)[1]
    assert twice <= once, f"{work}: x1 read the device {once} times, x2 {twice}"
