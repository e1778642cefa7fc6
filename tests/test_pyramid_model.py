"""The pyramid of conditional VAEs: shapes, per-level objectives, partial sampling."""

from __future__ import annotations

import pytest
import torch

from condvae.errors import CondVAEError
from condvae.pyramid import laplacian_pyramid
from condvae.pyramid.model import PyramidVAE


def _model(latent: str = "vector") -> PyramidVAE:
    torch.manual_seed(0)
    return PyramidVAE((3, 32, 32), levels=2, latent_dims=[4, 6], channels=[8, 16], hidden=32, latent=latent)


@pytest.mark.parametrize("latent", ["vector", "map"])
def test_each_level_objective_trains_only_its_own_level(latent: str) -> None:
    model = _model(latent)
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


@pytest.mark.parametrize("latent", ["vector", "map"])
def test_partial_sampling_keeps_the_fixed_levels_exactly(latent: str) -> None:
    model = _model(latent)
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


def _blobs(n: int = 64, size: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.rand(n, 2, generator=gen) * (size - 6) + 3
    d2 = (yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2
    return torch.exp(-d2 / 8).unsqueeze(1).float()


SMALL = {
    "levels": 2,
    "latent_dims": [4, 4],
    "channels": [8],
    "hidden": 32,
    "coarse": {"latent_dim": 4, "hidden": [32]},
}


def test_greedy_training_improves_every_level_and_saves(tmp_path) -> None:
    import condvae
    from condvae.pyramid.train import PyramidTrainConfig, train_pyramid

    x = _blobs()
    torch.manual_seed(0)
    before = PyramidVAE((1, 16, 16), **SMALL)
    cfg = PyramidTrainConfig(
        dataset="blobs", out=str(tmp_path / "run"), model=SMALL, epochs=15, batch_size=16, augment=True
    )
    model = train_pyramid(cfg, progress=False, data=x)
    with torch.no_grad():
        for level in range(3):
            torch.manual_seed(1)
            old = float(before.level_elbo(level, x).mean())
            torch.manual_seed(1)
            new = float(model.level_elbo(level, x).mean())
            assert new > old + 5, (level, old, new)
    back = condvae.load_pyramid(tmp_path / "run" / "model")
    torch.testing.assert_close(back.reconstruct(x[:4]), model.reconstruct(x[:4]))


def test_killed_pyramid_training_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    from condvae.pyramid import train as pyramid_train
    from condvae.pyramid.train import PyramidTrainConfig, train_pyramid

    x = _blobs(48)
    settings = dict(dataset="blobs", model=SMALL, epochs=2, batch_size=16, checkpoint_every=4, augment=True)
    whole = train_pyramid(PyramidTrainConfig(out=str(tmp_path / "whole"), **settings), progress=False, data=x)
    calls = {"n": 0}
    real = pyramid_train.augment

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # mid-way through level 1 (6 steps per level)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pyramid_train, "augment", dies)
    cfg = PyramidTrainConfig(out=str(tmp_path / "killed"), **settings)
    with pytest.raises(KeyboardInterrupt):
        train_pyramid(cfg, progress=False, data=x)
    monkeypatch.setattr(pyramid_train, "augment", real)
    resumed = train_pyramid(cfg, resume=True, progress=False, data=x)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("condition", ["truth", "reconstruction"])
def test_what_a_finer_level_conditions_on_in_training(condition: str) -> None:
    from condvae.pyramid import gaussian_pyramid

    torch.manual_seed(0)
    model = PyramidVAE(
        (3, 32, 32), levels=2, latent_dims=[4, 6], channels=[8, 16], hidden=32, condition=condition
    )
    x = torch.rand(3, 3, 32, 32)
    gauss = gaussian_pyramid(x, 2)
    for level in (1, 2):
        coarser = model._coarser_image(gauss, level)
        if condition == "truth":
            assert torch.equal(coarser, gauss[3 - level])
        else:  # the levels above, reconstructed: the coarse VAE, then refined by level 1
            expected = model.coarse.reconstruct(gauss[2])
            if level == 2:
                expected = model._refine(1, gauss[1], expected)
            torch.testing.assert_close(coarser, expected)
            assert not torch.allclose(coarser, gauss[3 - level])
    with pytest.raises(CondVAEError, match="latent: expected one of vector, map"):
        PyramidVAE((1, 32, 32), levels=2, latent_dims=[4, 4], latent="grid")
    with pytest.raises(CondVAEError, match="condition: expected one of reconstruction, truth"):
        PyramidVAE((1, 32, 32), levels=2, latent_dims=[4, 4], condition="labels")


def test_edit_fixes_the_painting_at_any_level_size() -> None:
    from condvae.pyramid import gaussian_pyramid

    model = _model()
    for size in (8, 16):
        painting = torch.rand(2, 3, size, size)
        torch.manual_seed(3)
        edited = model.edit(painting, n=4)
        assert edited.shape == (4, 2, 3, 32, 32) and torch.isfinite(edited).all()
        torch.manual_seed(3)
        assert torch.equal(model.edit(painting, n=4), edited)  # seeded
        assert not torch.equal(edited[0], edited[1])  # the finer levels are sampled
    top = gaussian_pyramid(torch.rand(1, 3, 32, 32), 2)
    full = model.edit(top[0], n=2)  # a full-size painting: nothing left to sample
    torch.testing.assert_close(full, top[0].expand(2, 1, 3, 32, 32), atol=1e-6, rtol=0)
    with pytest.raises(CondVAEError, match=r"painting: expected \[B, 3, h, w\] .*\(8x8, 16x16, 32x32\)"):
        model.edit(torch.rand(1, 3, 12, 12))
    with pytest.raises(CondVAEError, match="painting: expected finite pixel values in"):
        model.edit(torch.full((1, 3, 8, 8), 1.5))
    with pytest.raises(CondVAEError, match="painting: expected finite pixel values in"):
        model.edit(torch.full((1, 3, 8, 8), float("nan")))


def test_temperature_scales_the_latent_spread() -> None:
    model = _model("map")
    cold = model.sample(3, temperature=0.0)
    assert torch.equal(cold, model.sample(3, temperature=0.0)) and torch.equal(cold[0], cold[1])
    torch.manual_seed(5)
    warm = model.sample(64, temperature=1.0)
    torch.manual_seed(5)
    cool = model.sample(64, temperature=0.3)
    assert cool.std(0).mean() < 0.6 * warm.std(0).mean()
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(CondVAEError, match="temperature: expected a finite number >= 0"):
            model.sample(2, temperature=bad)
