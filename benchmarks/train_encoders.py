"""Train the bundled partial encoders (IPA / IPA-R) and publish them into the package.

    python benchmarks/train_encoders.py --root runs/encoders --resume --publish
    python benchmarks/train_encoders.py --only mnist-mlp-z2-ipa --quick

Each run is exactly ``condvae train-partial-encoder`` with the arguments below; the card of a
published encoder quotes the command and its validation scores on the VAE's valid split.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from common import machine

from condvae.cli import main as cli_main
from condvae.data import fixed_binarize, load_dataset
from condvae.data.tables import load_table
from condvae.masks import sample_masks
from condvae.models import VAE, TabularVAE
from condvae.partial import PartialEncoder, pretrained
from condvae.partial.pretrained import load_partial_encoder, save_partial_encoder
from condvae.store import from_pretrained

COMMON = "--masks mixture --batch-size 128 --lr 1e-3 --lr-min 1e-5 --seed 0 --checkpoint-every 500"
ENCODERS: dict[str, str] = {
    "mnist-mlp-z2-ipa": f"--model mnist-mlp-z2 --objective forward --steps 12000 {COMMON}",
    "mnist-mlp-z2-ipar": f"--model mnist-mlp-z2 --objective reverse --steps 12000 {COMMON}",
    "mnist-mlp-z50-ipa": f"--model mnist-mlp-z50 --objective forward --steps 12000 {COMMON}",
    "fashion-conv-z32-ipa": f"--model fashion-conv-z32 --objective forward --steps 8000 {COMMON}",
    "fashion-conv-z32-ipar": f"--model fashion-conv-z32 --objective reverse --steps 8000 {COMMON}",
    "mnist-hier-z28-ipa": f"--model mnist-hier-z28 --objective forward --steps 12000 {COMMON}",
    "mnist-hier-z28-ipar": f"--model mnist-hier-z28 --objective reverse --steps 12000 {COMMON}",
    "fashion-hier-z28-ipa": f"--model fashion-hier-z28 --objective forward --steps 8000 {COMMON}",
}
# The table VAEs' encoders: random masks (every observed fraction), batches that fit the small tables.
TABLE_COMMON = "--masks random --batch-size 64 --lr 1e-3 --lr-min 1e-5 --seed 0 --checkpoint-every 500"
ENCODERS.update(
    {
        f"{vae}-ipa": f"--model {vae} --objective forward --steps 3000 --valid-every 250 {TABLE_COMMON}"
        for vae in ("breast-cancer-tab-z4", "diabetes-tab-z4", "wine-tab-z4")
    }
)


@torch.no_grad()
def test_scores(encoder: PartialEncoder, vae: VAE, images: int = 2000) -> dict[str, float]:
    """Both objectives on the first ``images`` test images with seeded mixture masks."""
    if isinstance(vae, TabularVAE):  # a table's test rows in the model's space
        x = vae.to_model(load_table(vae.card["dataset"], "test").x)
        images = len(x)
    else:
        x = load_dataset(vae.card["dataset"], "test").x[:images]
    x = fixed_binarize(x) if vae.likelihood.name == "bernoulli" else x
    mask = sample_masks("mixture", len(x), vae.data_shape, torch.Generator().manual_seed(2024))
    torch.manual_seed(0)
    kl = torch.cat(
        [encoder.forward_kl(vae, x[i : i + 500], mask[i : i + 500]) for i in range(0, len(x), 500)]
    )
    c_elbo = torch.cat(
        [
            -encoder.reverse_loss(vae, x[i : i + 500], mask[i : i + 500], samples=8)
            for i in range(0, len(x), 500)
        ]
    )
    return {
        f"test O_for: mean KL(q(z|x) || r(z|x_o)) (nats, {images} images, mixture masks)": round(
            float(kl.mean()), 3
        ),
        f"test C-ELBO: mean (nats, 8 draws, {images} images, mixture masks)": round(float(c_elbo.mean()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(ENCODERS))
    parser.add_argument("--root", default="runs/encoders")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--publish", action="store_true")
    parser.add_argument("--quick", action="store_true", help="200 steps each (a smoke run)")
    args = parser.parse_args(argv)
    for name in args.only or list(ENCODERS):
        out = Path(args.root) / name
        cli_args = [*ENCODERS[name].split(), "--out", str(out), "--no-progress"]
        if args.quick:
            cli_args += ["--steps", "200", "--valid-every", "100"]
        if args.resume and (out / "checkpoint.safetensors").exists():
            cli_args.append("--resume")
        elif out.exists():
            shutil.rmtree(out)
        if cli_main(["train-partial-encoder", *cli_args]) != 0:
            raise SystemExit(f"training {name} failed")
        if args.publish:
            model = ENCODERS[name].split()[1]
            vae = from_pretrained(model)
            encoder = load_partial_encoder(out / "encoder", vae)
            card = dict(encoder.card)
            card["metrics"] = test_scores(encoder, vae)
            card["name"] = name
            card["command"] = (
                f"python -m condvae train-partial-encoder {ENCODERS[name]} --out runs/encoders/{name}"
            )
            card["usage"] = (
                f'import condvae\nvae = condvae.load("{model}")\n'
                f'post = condvae.condition(vae, x, mask, method="ipa", encoder="{name}")'
            )
            card["machine"] = machine()
            print(
                f"published {save_partial_encoder(encoder, pretrained.ENCODERS.directory / name, card=card)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
