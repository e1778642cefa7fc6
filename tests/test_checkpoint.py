from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from condvae import MLPVAE, CheckpointError, ConvVAE, from_pretrained, load, save_pretrained
from condvae.checkpoint import atomic_save_tensors, read_tensors
from condvae.classifier import CLASSIFIERS, SmallCNN, load_classifier, save_classifier
from condvae.partial import ENCODERS
from condvae.pyramid import PYRAMIDS
from condvae.store import KINDS, VAES, bundled, describe


@pytest.fixture
def saved(tmp_path: Path) -> tuple[MLPVAE, Path]:
    torch.manual_seed(0)
    model = MLPVAE((1, 6, 6), latent_dim=3, hidden=[12])
    return model, save_pretrained(model, tmp_path / "m", card={"name": "tiny", "metrics": {"elbo": -1}})


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "logistic"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, likelihood: str) -> None:
    torch.manual_seed(1)
    model = ConvVAE((1, 8, 8), latent_dim=3, channels=[4], hidden=8, likelihood=likelihood).eval()
    if likelihood == "gaussian":
        with torch.no_grad():
            model.likelihood.log_scale.normal_()
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    clone = from_pretrained(tmp_path / "m")
    x, z = torch.rand(4, 1, 8, 8), torch.randn(5, 4, 3)
    with torch.no_grad():
        for a, b in (
            (model.encode(x).mean, clone.encode(x).mean),
            (model.decode(z).mean, clone.decode(z).mean),
        ):
            assert torch.equal(a, b)
    assert load(str(tmp_path / "m")).config() == model.config()


def test_card_is_written(saved: tuple[MLPVAE, Path]) -> None:
    _, path = saved
    card = (path / "README.md").read_text()
    assert card.startswith("# tiny") and "| elbo | -1 |" in card
    assert from_pretrained(path).card["metrics"] == {"elbo": -1}  # type: ignore[attr-defined]


def test_truncated_weights(saved: tuple[MLPVAE, Path]) -> None:
    _, path = saved
    raw = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is corrupt, truncated"):
        from_pretrained(path)


def test_garbage_and_pickle_weights(saved: tuple[MLPVAE, Path]) -> None:
    model, path = saved
    (path / "model.safetensors").write_bytes(pickle.dumps(model.state_dict()))
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a safetensors file"):
        from_pretrained(path)
    torch.save(model.state_dict(), path / "weights.pt")
    with pytest.raises(CheckpointError, match="looks like a pickle file"):
        read_tensors(path / "weights.pt")
    with pytest.raises(CheckpointError, match="is a file; pass the directory"):
        from_pretrained(path / "weights.pt")


def test_mismatched_config(saved: tuple[MLPVAE, Path]) -> None:
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["model"]["hidden"] = [13]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'encoder.0.weight' has shape \[12, 36\], the config needs \[13, 36\]",
    ):
        from_pretrained(path)
    config["model"]["hidden"] = [12, 12]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match its config .*missing tensors"):
        from_pretrained(path)
    config["model"]["architecture"] = "conv"
    config["model"].pop("activation")
    config["model"]["channels"] = [3]
    config["model"]["hidden"] = 8
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="holds a 'mlp' model, config.json describes 'conv'"):
        from_pretrained(path)


def test_foreign_files(saved: tuple[MLPVAE, Path], tmp_path: Path) -> None:
    model, path = saved
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="was not written by condvae"):
        from_pretrained(path)
    (path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="is not a condvae config"):
        from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json' is not valid JSON"):
        from_pretrained(path)
    (path / "config.json").write_text(
        json.dumps({"format": "condvae-pretrained", "format_version": 99, "model": {}})
    )
    with pytest.raises(CheckpointError, match="format_version 99"):
        from_pretrained(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        from_pretrained(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json' not found"):
        from_pretrained(tmp_path / "empty")


def test_nan_weights_rejected(saved: tuple[MLPVAE, Path]) -> None:
    model, path = saved
    state = model.state_dict()
    state["decoder.0.bias"] = torch.full_like(state["decoder.0.bias"], float("nan"))
    atomic_save_tensors(
        path / "model.safetensors", state, {"format": "condvae-pretrained", "architecture": "mlp"}
    )
    with pytest.raises(CheckpointError, match="'decoder.0.bias' contains NaN"):
        from_pretrained(path)


def test_atomic_save_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_save_tensors(tmp_path / "a.safetensors", {"w": torch.ones(3)}, {"k": "v"})
    atomic_save_tensors(tmp_path / "a.safetensors", {"w": torch.zeros(3)}, {"k": "v2"})
    tensors, meta = read_tensors(tmp_path / "a.safetensors")
    assert torch.equal(tensors["w"], torch.zeros(3)) and meta == {"k": "v2"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_unknown_model_name() -> None:
    from condvae.errors import CondVAEError

    with pytest.raises(CondVAEError, match="model: unknown model name 'mnist-gan'"):
        load("mnist-gan")


def test_classifier_config_is_checked_like_any_artifact(tmp_path: Path) -> None:
    path = save_classifier(SmallCNN((1, 8, 8), classes=3, width=16), tmp_path / "clf")
    assert load_classifier(path).classes == 3
    config = json.loads((path / "config.json").read_text())
    for text, message in (
        ("{not json", "config.json' is not valid JSON"),
        (json.dumps({**config, "format": "condvae-pretrained"}), "is not a condvae config"),
        (json.dumps({**config, "format_version": 7}), "has format_version 7, this condvae reads up to 1"),
    ):
        (path / "config.json").write_text(text)
        with pytest.raises(CheckpointError, match=message) as info:
            load_classifier(path)
        assert "\n" not in str(info.value)


def test_other_kinds_are_pointed_to_their_loader(tmp_path: Path) -> None:
    path = save_classifier(SmallCNN((1, 8, 8), classes=3, width=16), tmp_path / "clf")
    with pytest.raises(
        CheckpointError, match="is a 'small-cnn' model, not a VAE; load it with .*load_classifier"
    ):
        from_pretrained(path)
    with pytest.raises(
        CheckpointError, match="is a 'mlp' model, not a classifier; load it with condvae.load"
    ):
        load_classifier(VAES.directory / "mnist-mlp-z2")


def test_the_listing_covers_every_kind() -> None:
    text = describe()
    assert {"model", "encoder", "pyramid", "classifier"} <= set(KINDS)
    for kind in (VAES, ENCODERS, PYRAMIDS, CLASSIFIERS):
        assert f"bundled {kind.title}s ({kind.loader}):" in text and bundled(kind)
        assert all(f"\n{name}: " in text for name in bundled(kind))
