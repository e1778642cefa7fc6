"""The pyramid of conditional VAEs: shapes, per-level objectives, partial sampling."""

from __future__ import annotations

import pytest
import torch

from condvae.errors import CondVAEError
from condvae.pyramid import laplacian_pyramid
from condvae.pyramid.model import PyramidVAE


def _model() -> PyramidVAE:
    torch.manual_seed(0)
    return PyramidVAE((3, 32, 32), levels=2, latent_dims=[4, 6], channels=[8, 16], hidden=32)


def test_each_level_objective_trains_only_its_own_level() -> None:
    model = _model()
    x = torch.rand(5, 3, 32, 32)
    owners = [model.coarse, model.finer[0], model.finer[1]]
    for level, owner in enumerate(owners):
        model.zero_grad(set_to_none=True)
        elbo = model.level_elbo(level, x)
        assert elbo.shape == (5,) and torch.isfinite(elbo).all()
        (-elbo.mean()).backward()
        own = {id(p) for p in owner.parameters()}
        assert all(p.grad is None for p in model.parameters() if id(p) not in own)  # greedy: one level
        assert any(p.grad is not None for p in owner.parameters())


def test_finer_levels_condition_on_the_coarser_image_through_their_prior() -> None:
    model = _model()
    c1, c2 = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    level = model.finer[0]
    assert not torch.allclose(level.prior(c1).loc, level.prior(c2).loc)  # N(R_k(c), S_k(c))


def test_partial_sampling_keeps_the_fixed_levels_exactly() -> None:
    model = _model()
    x = torch.rand(2, 3, 32, 32)
    truth = laplacian_pyramid(x, 2)
    for keep in (1, 2, 3):
        levels = model.sample_levels(4, start=x, keep=keep)
        assert [lv.shape[-1] for lv in levels] == [8, 16, 32]
        for k in range(keep):
            assert torch.equal(levels[k], truth[k].repeat(4, 1, 1, 1)), (keep, k)
    full = model.sample(3, start=x, keep=3)
    torch.testing.assert_close(full, x.expand(3, *x.shape), atol=1e-6, rtol=0)  # all levels fixed
    assert model.sample(2).shape == (2, 1, 3, 32, 32)
    assert model.reconstruct(x).shape == x.shape


def test_bad_settings_and_input() -> None:
    with pytest.raises(CondVAEError, match="latent_dims: expected one per finer level"):
        PyramidVAE((1, 32, 32), levels=2, latent_dims=[4])
    with pytest.raises(CondVAEError, match="not divisible by 2\\^3"):
        PyramidVAE((1, 28, 28), levels=3, latent_dims=[4, 4, 4])
    model = _model()
    with pytest.raises(CondVAEError, match="x: expected images"):
        model.reconstruct(torch.rand(2, 1, 32, 32))
    with pytest.raises(CondVAEError, match="keep: expected 1 to 3"):
        model.sample(2, start=torch.rand(1, 3, 32, 32), keep=0)
