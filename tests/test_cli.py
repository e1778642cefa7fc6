"""The command line: one-line errors naming the argument, never a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from condvae import MLPVAE, save_pretrained
from condvae.cli import build_parser, config_from, main
from condvae.partial.train import PartialTrainConfig
from condvae.pyramid.train import PyramidTrainConfig
from condvae.train import TrainConfig


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse refuses a flag's value itself, in the same one-line form
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("condvae: error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


def test_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        [
            "train",
            "--dataset",
            "mnist",
            "--out",
            str(tmp_path / "o"),
            "--data-dir",
            str(tmp_path / "nowhere"),
        ],
        capsys,
    )
    _one_line_error(code, err, "data_dir: ")


def test_wrong_image_size(synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        [
            "train",
            "--dataset",
            "mnist",
            "--out",
            str(tmp_path / "o"),
            "--data-dir",
            str(synthetic_data),
            "--image-size",
            "32x32",
        ],
        capsys,
    )
    _one_line_error(code, err, "size: dataset 'mnist' has 28x28 images, asked for 32x32")
    code, _, err = _run(
        [
            "train",
            "--dataset",
            "mnist",
            "--out",
            str(tmp_path / "o"),
            "--arch",
            "conv",
            "--channels",
            "8,8,8",
            "--data-dir",
            str(synthetic_data),
        ],
        capsys,
    )
    _one_line_error(code, err, "not divisible by 8")


def test_unknown_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["evaluate", "--model", "no-such-model"], capsys)
    _one_line_error(code, err, "model: unknown model name 'no-such-model'")
    code, _, err = _run(["demo", "--model", "no-such-model"], capsys)
    _one_line_error(code, err, "model: unknown model name")


def test_nan_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(12):
        Image.new("L", (8, 8), color=i * 20).save(tmp_path / "imgs" / f"{i}.png")
    model = MLPVAE((1, 8, 8), latent_dim=2, hidden=[8], likelihood="gaussian")
    with torch.no_grad():
        model.decoder[0].bias.fill_(float("nan"))
    save_pretrained(model, tmp_path / "m", card={"dataset": f"folder:{tmp_path / 'imgs'}"})
    code, _, err = _run(["evaluate", "--model", str(tmp_path / "m"), "--k", "2"], capsys)
    _one_line_error(code, err, "contains NaN or inf")
    bad = torch.full((2, 1, 8, 8), float("nan"))
    from condvae.errors import CondVAEError
    from condvae.evaluate import evaluate

    with pytest.raises(CondVAEError, match="x: contains NaN"):
        evaluate(MLPVAE((1, 8, 8), latent_dim=2, hidden=[8], likelihood="gaussian"), bad, k=2)


def test_bad_option_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", "mnist", "--out", str(tmp_path), "--hidden", "a,b"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--hidden: expected comma-separated integers" in err and "Traceback" not in err
    code, _, err = _run(
        ["train", "--dataset", "mnist", "--out", str(tmp_path / "o"), "--epochs", "0"], capsys
    )
    _one_line_error(code, err, "epochs: expected a positive integer")


def test_bad_evaluation_settings(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(synthetic_data)]
    save_pretrained(MLPVAE((1, 28, 28), latent_dim=2, hidden=[8]), tmp_path / "m", card={"dataset": "mnist"})
    for flag, value in (("--k", "0"), ("--limit", "-1"), ("--chunk", "0")):
        code, _, err = _run(["evaluate", "--model", str(tmp_path / "m"), flag, value, *data], capsys)
        _one_line_error(code, err, f"{flag[2:]}: expected a positive")
    code, _, err = _run(["evaluate", "--model", str(tmp_path / "m"), "--dataset", "frey", *data], capsys)
    _one_line_error(code, err, "dataset: 'frey' images are [1, 28, 20], the model expects [1, 28, 28]")


def test_train_and_evaluate_commands(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(synthetic_data),
            "--out",
            str(tmp_path / "run"),
            "--hidden",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "20",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "trained 22 steps" in out
    code, out, err = _run(
        [
            "evaluate",
            "--model",
            str(tmp_path / "run" / "model"),
            "--data-dir",
            str(synthetic_data),
            "--k",
            "20",
            "--limit",
            "10",
            "--json",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    import json

    scores = json.loads(out)
    assert scores["images"] == 10 and scores["k"] == 20 and scores["iw_nll"] <= -scores["elbo"] + 1.0


def test_module_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "condvae", "models"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""


def _tiny_model_and_png(tmp_path: Path) -> tuple[Path, Path]:
    from PIL import Image

    torch.manual_seed(0)
    save_pretrained(MLPVAE((1, 28, 28), latent_dim=2, hidden=[16]), tmp_path / "m", card={"dataset": "mnist"})
    digit = torch.zeros(28, 28, dtype=torch.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit.numpy()).save(tmp_path / "digit.png")
    return tmp_path / "m", tmp_path / "digit.png"


def test_inpaint_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, png = _tiny_model_and_png(tmp_path)
    out = tmp_path / "out.png"
    code, stdout, err = _run(
        [
            "inpaint",
            "--model",
            str(model),
            "--image",
            str(png),
            "--mask",
            "box:4,4,24,14",
            "--method",
            "grid,gvi,rejection",
            "--steps",
            "30",
            "--samples",
            "3",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].split() == ["method", "C-ELBO", "query", "LL", "gap", "seconds"]
    assert [line.split()[0] for line in lines[1:4]] == ["grid", "gvi", "rejection"]
    assert out.stat().st_size > 2000


def test_inpaint_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    model, png = _tiny_model_and_png(tmp_path)
    base = ["inpaint", "--model", str(model), "--out", str(tmp_path / "o.png")]
    Image.new("L", (20, 20)).save(tmp_path / "small.png")
    code, _, err = _run([*base, "--image", str(tmp_path / "small.png")], capsys)
    _one_line_error(code, err, "the model expects 28x28")
    code, _, err = _run([*base, "--image", str(png), "--mask", "circle:3"], capsys)
    _one_line_error(code, err, "mask: unknown spec 'circle:3'")
    code, _, err = _run([*base, "--image", str(png), "--mask", "box:0,0,40,4"], capsys)
    _one_line_error(code, err, "outside the 28x28 image")
    Image.new("L", (28, 28), color=128).save(tmp_path / "grey.png")
    code, _, err = _run([*base, "--image", str(png), "--mask", str(tmp_path / "grey.png")], capsys)
    _one_line_error(code, err, "must be black (0) and white (255) only")
    code, _, err = _run([*base, "--image", str(png), "--mask", "box:0,0,28,28"], capsys)
    _one_line_error(code, err, "observes every dimension")
    code, _, err = _run([*base, "--image", str(png), "--method", "gvi,magic"], capsys)
    _one_line_error(code, err, "method: unknown ['magic']")
    code, _, err = _run([*base, "--image", "mnist:test"], capsys)
    _one_line_error(code, err, "image: expected dataset:split:index")


def test_train_partial_encoder_then_inpaint_with_it(
    synthetic_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, png = _tiny_model_and_png(tmp_path)
    run = tmp_path / "enc"
    args = ["train-partial-encoder", "--model", str(model), "--out", str(run)]
    args += ["--data-dir", str(synthetic_data)]
    args += ["--steps", "30", "--batch-size", "16", "--valid-every", "15", "--no-progress"]
    code, stdout, err = _run(args, capsys)
    assert code == 0, err
    assert "trained 30 steps" in stdout and (run / "encoder" / "config.json").is_file()
    code, _, err = _run(args, capsys)
    _one_line_error(code, err, "already holds a training checkpoint")
    code, stdout, err = _run([*args, "--resume"], capsys)
    assert code == 0, err  # a finished run resumes to its end at once
    inpaint = ["inpaint", "--model", str(model), "--image", str(png), "--mask", "freeform", "--samples", "2"]
    inpaint += ["--method", "ipa,semi", "--encoder", str(run / "encoder"), "--out", str(tmp_path / "o.png")]
    code, stdout, err = _run(inpaint, capsys)
    assert code == 0, err
    assert [line.split()[0] for line in stdout.splitlines()[1:3]] == ["ipa", "semi"]
    save_pretrained(MLPVAE((1, 28, 28), latent_dim=2, hidden=[16]), tmp_path / "other")
    inpaint[2] = str(tmp_path / "other")
    code, _, err = _run(inpaint, capsys)
    _one_line_error(code, err, "was trained for the VAE")
    bad = ["train-partial-encoder", "--model", str(model), "--out", str(tmp_path / "x"), "--steps", "0"]
    code, _, err = _run([*bad, "--data-dir", str(synthetic_data)], capsys)
    _one_line_error(code, err, "steps: expected a positive integer")


def _subparser(*command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


@pytest.mark.parametrize(
    "command, config",
    [
        (["train"], TrainConfig),
        (["train-partial-encoder"], PartialTrainConfig),
        (["pyramid", "train"], PyramidTrainConfig),
    ],
)
def test_training_flags_are_the_config_fields(command: list[str], config: type) -> None:
    """Every field but the model's arguments has a flag, and an empty command line gives its defaults."""
    fields = [f for f in dataclasses.fields(config) if f.name != "model"]
    options = _subparser(*command)._option_string_actions
    assert all(f"--{f.name.replace('_', '-')}" in options for f in fields)
    required = [f.name for f in fields if dataclasses.MISSING is f.default is f.default_factory]
    args = build_parser().parse_args([*command, *[a for name in required for a in (f"--{name}", name)]])
    assert config_from(args, config) == config(**{name: name for name in required})


def test_older_flag_names_keep_their_meaning() -> None:
    args = build_parser().parse_args(["train", "--dataset", "d", "--out", "o", "--kl-warmup", "7"])
    assert args.kl_warmup_steps == 7
    args = build_parser().parse_args(["train-partial-encoder", "--model", "m", "--out", "o"])
    assert args.vae == "m"


def test_demo_passes_the_mask_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import condvae.demo

    seen: dict[str, object] = {}
    monkeypatch.setattr(condvae.demo, "run_demo", lambda *args, **kwargs: seen.update(kwargs))
    assert main(["demo", "--mask", "random:0.3"]) == 0
    assert seen["mask"] == "random:0.3"
