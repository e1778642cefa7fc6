"""The bundled pretrained models: present, loadable by name, documented, and as good as stated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from recipes import RECIPES

import condvae
from condvae.demo import run_demo
from condvae.evaluate import evaluate_dataset
from condvae.store import PRETRAINED_DIR, VAES, bundled, describe, read_config


def _metric(card: dict, prefix: str) -> float:
    return next(v for k, v in card["metrics"].items() if k.startswith(prefix))


def test_every_recipe_is_bundled() -> None:
    assert bundled(VAES) == sorted(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bundled_model_loads_and_is_documented(name: str) -> None:
    model = condvae.load(name)
    card = model.card  # type: ignore[attr-defined]
    assert card["command"] == RECIPES[name].train_command(f"runs/{name}")
    assert {"test ELBO", "test IW-NLL", "training time"} <= {k.split(" (")[0] for k in card["metrics"]}
    text = (PRETRAINED_DIR / name / "README.md").read_text()
    assert card["command"] in text and "IW-NLL" in text
    size = (PRETRAINED_DIR / name / "model.safetensors").stat().st_size
    assert size < 20 * 2**20
    with torch.no_grad():
        z = model.prior.sample((3,))
        assert model.decode(z).batch_shape == (3, *model.data_shape)
    assert read_config(VAES, name)["model"] == model.config()
    assert name in describe()


def test_latent50_model_meets_the_nll_target() -> None:
    card = condvae.load("mnist-mlp-z50").card  # type: ignore[attr-defined]
    key = next(k for k in card["metrics"] if k.startswith("test IW-NLL"))
    assert "k=5000" in key and "10000 images" in key
    assert card["metrics"][key] <= 88.0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recorded_scores_reproduce_on_a_subset(name: str, real_data: Path) -> None:
    model = condvae.load(name)
    recorded = _metric(model.card, "test ELBO")  # type: ignore[attr-defined]
    scores = evaluate_dataset(model, k=20, limit=500, data_dir=str(real_data), progress=False)
    # 500 images vs the recorded full split: the subset mean differs by sampling error only.
    assert abs(scores["elbo"] - recorded) < 0.05 * abs(recorded) + 5.0
    assert scores["iw_nll"] <= -scores["elbo"] + 0.5


@pytest.mark.slow
def test_demo_inpaints_and_prints_scores(
    real_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = run_demo("mnist-mlp-z50", out=str(tmp_path / "demo.png"), n=2, data_dir=str(real_data))
    out = capsys.readouterr().out
    assert (tmp_path / "demo.png").stat().st_size > 5000
    assert "test IW-NLL" in out and "query LL" in out
    assert [r["method"] for r in rows] == ["gvi", "planar", "mixture", "ipa", "semi"]  # z50 has an encoder
    for row in rows:
        # Top half observed: the bound is finite and the hidden half is predicted far better
        # than chance (392 hidden binary pixels at chance would cost 272 nats).
        assert -200 < row["c_elbo"] < 0 and -150 < row["query_ll"] < 0
