"""Flips and shifts for small sets, and their use by the VAE training loop."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from condvae import from_pretrained
from condvae.data.augment import augment
from condvae.train import TrainConfig, train


def test_each_image_is_flipped_or_not_and_the_batch_shifted_with_reflected_borders() -> None:
    x = torch.rand(64, 1, 10, 12)
    same = augment(x, 0, torch.Generator().manual_seed(0))
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(same, x, strict=True)]
    kept = [torch.equal(a, b) for a, b in zip(same, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 10 < sum(flipped) < 54
    out = augment(x, 2, torch.Generator().manual_seed(1))
    assert torch.equal(out, augment(x, 2, torch.Generator().manual_seed(1)))  # seeded
    padded = F.pad(torch.cat([x, x.flip(-1)]), (2, 2, 2, 2), mode="reflect")
    views = {
        (dy, dx): padded[..., 2 + dy : 12 + dy, 2 + dx : 14 + dx]
        for dy in range(-2, 3)
        for dx in range(-2, 3)
    }
    matches = [
        shift
        for shift, v in views.items()
        if all(any(torch.equal(o, c) for c in (v[i], v[64 + i])) for i, o in enumerate(out))
    ]
    assert len(matches) == 1  # one shift for the batch, every image at it (flipped or not)


def test_training_with_augmentation_records_it(synthetic_data: Path, tmp_path: Path) -> None:
    model = {"architecture": "mlp", "latent_dim": 2, "hidden": [8]}
    runs = {}
    for flag in (False, True):
        cfg = TrainConfig(
            dataset="mnist",
            out=str(tmp_path / str(flag)),
            data_dir=str(synthetic_data),
            model=model,
            epochs=2,
            batch_size=20,
            augment=flag,
        )
        runs[flag] = train(cfg, progress=False).model
    card = from_pretrained(tmp_path / "True" / "model").card  # type: ignore[attr-defined]
    assert card["training"]["augmentation"] == "flips and shifts of up to 2 px"
    a, b = (runs[f].state_dict() for f in (False, True))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the batches differed
