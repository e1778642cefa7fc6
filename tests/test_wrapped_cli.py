"""Wrapped models everywhere: saved by reference, loaded by every ``--model`` command, with partial
encoders trained for them; and the README's "Your own VAE" recipe, executed as written."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_examples_vae import VAE

import condvae
from condvae.cli import main
from condvae.metrics import Reference
from condvae.store import fingerprint

REPO = Path(__file__).resolve().parents[1]
SOURCE, TINY = "pytorch_examples_vae:VAE", {"hidden": 32, "latent": 4}
PARTIAL = ["--steps", "4", "--batch-size", "16", "--valid-every", "4", "--valid-size", "16", "--no-progress"]
PARTIAL += ["--masks", "random"]  # the default mixture draws brush strokes: a second per call


def _saved(tmp_path: Path) -> tuple[condvae.VAE, Path]:
    torch.manual_seed(0)
    model = VAE(**TINY)
    vae = condvae.wrap(
        model.decode,
        4,
        (1, 28, 28),
        decoder_output="probs",
        encoder=model.encode,
        encoder_input="flat",
        encoder_output="mu_logvar",
        source=SOURCE,
        source_kwargs=TINY,
    )
    card = {"name": "examples-vae", "dataset": "mnist"}
    return vae, condvae.save_pretrained(vae, tmp_path / "vae", card=card)


def _quick_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """``inpaint`` scores each method against the model's exact log p(y | x_o), for a 784-pixel
    model a 300-step mixture fit plus 20000-particle importance sampling (half a minute on CPU);
    that reference is tested on its own, so here it is a stand-in."""
    monkeypatch.setattr(
        "condvae.inpaint.reference_query_log_likelihood",
        lambda vae, x, mask: Reference(torch.zeros(len(x)), "stand-in"),
    )


@pytest.mark.slow
def test_wrapped_model_through_the_cli(
    tmp_path: Path, synthetic_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save -> CLI inpaint (a PNG) -> CLI evaluate -> CLI train-partial-encoder -> condition(ipa)."""
    _quick_reference(monkeypatch)
    vae, saved = _saved(tmp_path)
    png = tmp_path / "digit.png"
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:16] = 255
    Image.fromarray(pixels).save(png)
    out = tmp_path / "inpaint.png"
    common = ["--model", str(saved), "--data-dir", str(synthetic_data)]
    inpaint = ["inpaint", *common, "--image", str(png), "--mask", "top-half", "--samples", "2"]
    assert main([*inpaint, "--method", "importance", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["evaluate", *common, "--k", "8", "--limit", "4", "--no-progress"]) == 0
    runs = tmp_path / "ipa"
    assert main(["train-partial-encoder", *common, "--out", str(runs), "--hidden", "32", *PARTIAL]) == 0
    encoder = runs / "encoder"
    assert main([*inpaint, "--method", "ipa", "--encoder", str(encoder), "--out", str(out)]) == 0
    loaded = condvae.load(saved)
    assert fingerprint(loaded) == fingerprint(vae)  # the encoder fits the in-memory model as well
    x = torch.from_numpy(pixels / 255.0).float().round()[None, None].expand(3, 1, 28, 28)
    mask = condvae.make_mask("top-half", (1, 28, 28)).expand_as(x)
    for model in (loaded, vae):
        post = condvae.condition(model, x, mask, method="ipa", encoder=str(encoder))
        completions = post.complete(2)
        assert completions.shape == (2, 3, 1, 28, 28) and bool((completions[:, mask] == x[mask]).all())


def test_cli_evaluates_a_saved_wrapped_model(tmp_path: Path, synthetic_data: Path) -> None:
    _, saved = _saved(tmp_path)
    args = ["evaluate", "--model", str(saved), "--data-dir", str(synthetic_data), "--k", "4", "--limit", "2"]
    assert main([*args, "--no-progress", "--json"]) == 0


def test_a_pickle_is_refused_with_the_way_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pickle = tmp_path / "vae.pt"
    pickle.write_bytes(b"not read")
    assert main(["train-partial-encoder", "--model", str(pickle), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "condvae never unpickles; for your own model, condvae.wrap(" in err


def _section() -> str:
    return (REPO / "README.md").read_text().split("## Your own VAE", 1)[1].split("\n## ", 1)[0]


TEST_SIZE = {  # the README's commands as written, plus flags that make them quick
    "inpaint": ["--samples", "2", "--steps", "20"],
    "evaluate": ["--k", "8", "--limit", "4", "--no-progress"],
    "train-partial-encoder": ["--hidden", "32", *PARTIAL],
}


@pytest.mark.slow
def test_readme_own_vae_recipe_runs(
    tmp_path: Path, synthetic_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "Your own VAE": its my_vae.py, its Python block, then its commands."""
    section = _section()
    module, usage = re.findall(r"```python\n(.*?)```", section, re.S)
    (commands,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    wrap_call = usage.split("vae = condvae.wrap(", 1)[1].split("\n\n", 1)[0]
    assert len(wrap_call.splitlines()) <= 3  # with `model = VAE()`: wrapped in at most 5 lines
    (tmp_path / "my_vae.py").write_text(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "my_vae", None)  # forget it afterwards
    del sys.modules["my_vae"]
    monkeypatch.setenv("CONDVAE_DATA", str(synthetic_data))
    _quick_reference(monkeypatch)
    namespace: dict[str, object] = {}
    exec(compile(usage, "README.md", "exec"), namespace)
    completions, x, mask = namespace["completions"], namespace["x"], namespace["mask"]
    assert completions.shape == (16, 4, 1, 28, 28)  # type: ignore[attr-defined]
    assert bool((completions[:, mask] == x[mask]).all())  # type: ignore[index]
    for line in commands.strip().splitlines():
        args = shlex.split(line, comments=True)
        assert args[:3] == ["python", "-m", "condvae"], line
        assert main([*args[3:], *TEST_SIZE[args[3]]]) == 0, line
    vae = condvae.load("my-vae")
    post = condvae.condition(vae, x, mask, method="ipa", encoder="runs/my-ipa/encoder")  # type: ignore[arg-type]
    assert post.sample(3).shape == (3, 4, 20)
