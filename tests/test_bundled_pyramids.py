"""The bundled pyramids: they beat their same-size plain VAE, and editing follows the painting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from condvae import CheckpointError, from_pretrained, load
from condvae.data import load_dataset
from condvae.pyramid import PYRAMIDS, gaussian_pyramid, laplacian_pyramid, load_pyramid
from condvae.pyramid.metrics import reconstruction_rmse
from condvae.store import bundled

BASELINES = {"olivetti-pyramid": "olivetti-conv-z160", "fashion-pyramid": "fashion-conv-z32"}


def test_every_bundled_pyramid_has_a_baseline_and_a_card() -> None:
    assert sorted(bundled(PYRAMIDS)) == sorted(BASELINES)
    for name, baseline in BASELINES.items():
        model = load_pyramid(name)
        metrics = model.card["metrics"]
        assert any("sqrt(MSE)" in key for key in metrics) and model.card["command"].startswith(
            "python -m condvae"
        )
        size = sum(p.numel() for p in model.parameters())
        base = sum(p.numel() for p in load(baseline).parameters())
        assert 0.6 < size / base < 1.4, (name, size, base)  # "about the same number of parameters"
    for path in (
        Path(__file__).resolve().parents[1].glob("src/condvae/pretrained/pyramids/*/model.safetensors")
    ):
        assert path.stat().st_size < 20e6, path


def test_a_pyramid_is_refused_by_the_vae_loaders_in_one_line() -> None:
    for loader in (load, from_pretrained):
        with pytest.raises(
            CheckpointError, match=r"is a 'pyramid' model, not a VAE; load it with .*load_pyramid"
        ) as info:
            loader(str(PYRAMIDS.directory / "fashion-pyramid"))
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_the_pyramid_reconstructs_held_out_images_better_than_its_plain_vae(
    real_data: Path, name: str
) -> None:
    model, baseline = load_pyramid(name), load(BASELINES[name])
    x = load_dataset(model.card["dataset"], "test", real_data).x[:300]
    ours, theirs = reconstruction_rmse(model, x), reconstruction_rmse(baseline, x)
    assert ours.mean() < theirs.mean() - 1.0, (float(ours.mean()), float(theirs.mean()))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_editing_a_painted_coarse_image_keeps_its_coarse_level(name: str) -> None:
    model = load_pyramid(name)
    torch.manual_seed(0)
    coarse = model.sample_levels(4)[0].clamp(0, 1)
    painting = coarse.clone()
    h, w = painting.shape[-2:]
    painting[..., int(0.36 * h) : int(0.5 * h), int(0.15 * w) : int(0.85 * w)] = 0.05  # a dark band
    edited = model.edit(painting, n=8)  # [8, 4, C, H, W]
    top = gaussian_pyramid(edited.flatten(0, 1), model.levels)[-1].unflatten(0, (8, 4))
    gap = ((top - painting) * 255).pow(2).flatten(2).mean(2).sqrt()  # [8, 4], 0-255 scale
    unrelated = gaussian_pyramid(model.sample(32)[:, 0], model.levels)[-1]
    far = ((unrelated[:, None] - painting[None]) * 255).pow(2).flatten(2).mean(2).sqrt()
    # The finer levels were trained to correct a coarse reconstruction, so they move the coarse
    # level by about the coarse VAE's own reconstruction error (15 on Olivetti), never far.
    assert gap.max() < TOLERANCE[name], gap.max()
    assert gap.mean() < 0.4 * far.mean(), (gap.mean(), far.mean())
    fixed = model.sample_levels(3, start=edited[0, :1], keep=model.levels)  # and partial sampling
    truth = laplacian_pyramid(edited[0, :1], model.levels)
    assert all(
        torch.equal(a, b.repeat(3, 1, 1, 1)) for a, b in zip(fixed, truth[: model.levels], strict=False)
    )


# sqrt(MSE) on the 0-255 scale; measured 23.9 and 13.5
TOLERANCE = {"olivetti-pyramid": 30.0, "fashion-pyramid": 20.0}
