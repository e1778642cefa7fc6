"""The bundled partial encoders: each loads for its VAE, is refused for another, and scores on
real test images what its card records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from condvae import condition, load
from condvae.data import fixed_binarize, load_dataset
from condvae.data.tables import load_table
from condvae.errors import CondVAEError
from condvae.masks import sample_masks
from condvae.models import TabularVAE
from condvae.partial import ENCODERS as ENCODER_KIND
from condvae.partial import load_partial_encoder
from condvae.store import bundled, read_config

ENCODERS = bundled(ENCODER_KIND)


def _vae_of(name: str) -> str:
    return read_config(ENCODER_KIND, name)["vae"]["name"]


def test_every_bundled_vae_family_has_an_encoder() -> None:
    assert {"mnist-mlp-z2-ipa", "mnist-mlp-z2-ipar"} <= set(ENCODERS)
    for name in ENCODERS:
        size = (ENCODER_KIND.directory / name / "model.safetensors").stat().st_size
        assert size < 20e6, f"{name} is {size / 1e6:.1f} MB"
        assert "## Test scores" in (ENCODER_KIND.directory / name / "README.md").read_text()


@pytest.mark.parametrize("name", ENCODERS)
def test_bundled_encoder_loads_for_its_vae_and_is_refused_for_another(name: str) -> None:
    vae_name = _vae_of(name)
    vae = load(vae_name)
    encoder = load_partial_encoder(name, vae)
    assert encoder.card["name"] == name
    other = "mnist-mlp-z50" if vae_name != "mnist-mlp-z50" else "mnist-mlp-z2"
    pattern = rf"'{re.escape(name)}'.*trained for the VAE '{re.escape(vae_name)}'.*not for '{other}'"
    with pytest.raises(CondVAEError, match=pattern):
        load_partial_encoder(name, load(other))


@pytest.mark.parametrize("name", ENCODERS)
def test_bundled_encoder_reproduces_its_card(real_data: Path, name: str) -> None:
    """Mean O_for and C-ELBO on the card's 2000 test images, recomputed on the first 500 (the
    card's figure is a mean over 2000, so the tolerance is a few standard errors)."""
    vae = load(_vae_of(name))
    encoder = load_partial_encoder(name, vae)
    if isinstance(vae, TabularVAE):  # a table's test rows in the model's space
        x = vae.to_model(load_table(vae.card["dataset"], "test").x)
    else:
        x = load_dataset(vae.card["dataset"], "test", real_data).x[:2000]
    x = fixed_binarize(x) if vae.likelihood.name == "bernoulli" else x
    mask = sample_masks("mixture", len(x), vae.data_shape, torch.Generator().manual_seed(2024))[:500]
    torch.manual_seed(0)
    with torch.no_grad():
        kl = encoder.forward_kl(vae, x[:500], mask)
    card = encoder.card["metrics"]
    recorded = next(v for k, v in card.items() if k.startswith("test O_for"))
    assert float(kl.mean()) == pytest.approx(recorded, rel=0.15, abs=0.5)
    keep = mask.flatten(1).any(1) & ~mask.flatten(1).all(1)
    post = condition(vae, x[:500][keep][:50], mask[keep][:50], method="ipa", encoder=name)
    assert torch.isfinite(post.c_elbo(50)).all()


def test_inpaint_command_uses_the_bundled_encoder(real_data: Path, tmp_path: Path, capsys) -> None:
    from condvae.cli import main

    args = ["inpaint", "--model", "mnist-mlp-z2", "--image", "mnist:test:3", "--mask", "freeform"]
    args += ["--method", "ipa,semi", "--data-dir", str(real_data), "--out", str(tmp_path / "o.png")]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"ipa", "semi"}
    assert all(abs(float(r[3])) < 20 for r in rows.values())  # gap to the exact grid value, nats
