"""``condvae pyramid sample|edit|train``: PNG grids, and one-line errors for bad paintings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condvae import save_pretrained
from condvae.cli import main
from condvae.errors import CondVAEError
from condvae.pyramid.edit import load_painting
from condvae.pyramid.model import PyramidVAE
from condvae.pyramid.pretrained import load_pyramid


@pytest.fixture(scope="module")
def pyramid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = PyramidVAE((1, 32, 32), levels=2, latent_dims=[4, 4], channels=[8], hidden=16)
    return save_pretrained(model, tmp_path_factory.mktemp("pyr") / "model")  # type: ignore[arg-type]


def _png(path: Path, size: int, mode: str = "L", seed: int = 0) -> Path:
    shape = (size, size) if mode in ("L", "1") else (size, size, len(mode))
    array = (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
    Image.fromarray(array if mode != "1" else array > 127).convert(mode).save(path)
    return path


def _error(args: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
    try:
        code = main(args)
    except SystemExit as exc:  # a flag's value refused by argparse, in the same one-line form
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("condvae: error: ") and needle in err[0], err


def test_sample_and_edit_write_grids(pyramid_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "samples.png"
    assert main(["pyramid", "sample", "--model", str(pyramid_dir), "--n", "3", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
    image = _png(tmp_path / "face.png", 32)
    out = tmp_path / "partial.png"
    args = ["pyramid", "sample", "--model", str(pyramid_dir), "--image", str(image), "--keep", "1,2"]
    assert main([*args, "--n", "2", "--out", str(out)]) == 0 and out.is_file()
    for size, mode in ((8, "L"), (16, "1")):
        painting = _png(tmp_path / f"paint{size}.png", size, mode)
        out = tmp_path / f"edit{size}.png"
        args = ["pyramid", "edit", "--model", str(pyramid_dir), "--painting", str(painting)]
        assert main([*args, "--n", "2", "--out", str(out), "--draws", "--temperature", "0.5"]) == 0
        assert out.is_file()
    assert "wrote" in capsys.readouterr().out


def test_a_painting_of_the_wrong_size_or_mode_is_refused(pyramid_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["pyramid", "edit", "--model", str(pyramid_dir), "--painting"]
    _error([*args, str(_png(tmp_path / "a.png", 12))], capsys, "is 12x12; this model takes 8x8, 16x16, 32x32")
    _error(
        [*args, str(_png(tmp_path / "b.png", 8, "RGB"))], capsys, "has mode 'RGB'; this model takes greyscale"
    )
    _error([*args, str(_png(tmp_path / "c.png", 8, "RGBA"))], capsys, "has mode 'RGBA'")
    (tmp_path / "d.png").write_bytes(b"not a png")
    _error([*args, str(tmp_path / "d.png")], capsys, "painting: cannot read")
    _error([*args, str(tmp_path / "missing.png")], capsys, "painting: cannot read")
    colour = PyramidVAE((3, 16, 16), levels=1, latent_dims=[4], channels=[8], hidden=16)
    with pytest.raises(CondVAEError, match="has mode 'L'; this model takes RGB"):
        load_painting(_png(tmp_path / "e.png", 8), colour)
    assert load_painting(_png(tmp_path / "f.png", 8, "RGB"), colour).shape == (1, 3, 8, 8)


def test_bad_models_and_arguments(pyramid_dir: Path, tmp_path: Path, capsys) -> None:
    _error(["pyramid", "sample", "--model", "no-such-pyramid"], capsys, "unknown pyramid 'no-such-pyramid'")
    _error(["pyramid", "sample", "--model", "mnist-mlp-z2"], capsys, "unknown pyramid")
    vae_dir = Path(__file__).resolve().parents[1] / "src" / "condvae" / "pretrained" / "mnist-mlp-z2"
    _error(
        ["pyramid", "sample", "--model", str(vae_dir)], capsys, "is a 'mlp' model, not a Laplacian pyramid"
    )
    _error(
        ["pyramid", "sample", "--model", str(pyramid_dir), "--keep", "2"], capsys, "keep: fixing levels needs"
    )
    _error(["pyramid", "sample", "--model", str(pyramid_dir), "--n", "0"], capsys, "n: expected a positive")
    args = ["pyramid", "sample", "--model", str(pyramid_dir), "--temperature", "-1"]
    _error(args, capsys, "temperature: expected a finite number >= 0")
    image = _png(tmp_path / "big.png", 64)
    _error(["pyramid", "sample", "--model", str(pyramid_dir), "--image", str(image)], capsys, "is 64x64")
    image = _png(tmp_path / "ok.png", 32)
    args = ["pyramid", "sample", "--model", str(pyramid_dir), "--image", str(image), "--keep", "4"]
    _error(args, capsys, "keep: expected 1 to 3 fixed levels")
    assert isinstance(load_pyramid(str(pyramid_dir)), PyramidVAE)


def test_train_from_the_command_line(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):
        _png(folder / f"{i:03d}.png", 16, seed=i)
    out = tmp_path / "run"
    args = ["pyramid", "train", "--dataset", f"folder:{folder}", "--image-size", "16x16", "--out", str(out)]
    args += [
        "--latent-dims",
        "4,4",
        "--channels",
        "8",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]
    assert main([*args, "--coarse", '{"latent_dim": 4, "hidden": [16]}', "--no-progress"]) == 0
    assert isinstance(load_pyramid(str(out / "model")), PyramidVAE)
    _error([*args, "--coarse", "[1, 2]"], capsys, "coarse: expected a JSON object")
