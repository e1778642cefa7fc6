"""Train the bundled Laplacian pyramids and publish them into the package.

    python benchmarks/train_pyramids.py --publish                  # every pyramid (CPU: about an hour)
    python benchmarks/train_pyramids.py --only olivetti-pyramid --resume --publish

Each run is exactly ``condvae pyramid train`` with the arguments below. Their plain-VAE
baselines are zoo recipes (recipes.py: ``olivetti-conv-z160``, ``fashion-conv-z32``),
trained by ``benchmarks/train_zoo.py``; ``--publish`` writes the test sqrt(MSE) of both into the
pyramid's card (``benchmarks/pyramid.py`` prints the full comparison).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from common import machine

from condvae.cli import main as cli_main
from condvae.data import load_dataset
from condvae.pyramid import pretrained
from condvae.pyramid.metrics import reconstruction_rmse
from condvae.store import from_pretrained, save_pretrained

PYRAMIDS: dict[str, dict[str, str]] = {
    "olivetti-pyramid": {
        "args": (
            "--dataset olivetti --augment --levels 2 --latent-dims 4,4 --channels 32,64 "
            '--coarse \'{"architecture": "conv", "latent_dim": 64, "channels": [32, 64], '
            '"hidden": 256, "likelihood": "gaussian"}\' --latent map '
            "--epochs 100 --batch-size 32 --lr 1e-3 --seed 0"
        ),
        "baseline": "olivetti-conv-z160",
        "description": (
            "Olivetti faces 64x64: a conv VAE on the 16x16 coarse image, then conditional VAEs with "
            "latent maps for the 32x32 and 64x64 levels, each conditioned on the reconstruction of "
            "the levels above (its prior a conv network of that image). Trained greedily with "
            "flips and shifts on subjects 0-29; tested on the held-out subjects 35-39."
        ),
    },
    "fashion-pyramid": {
        "args": (
            "--dataset fashion_mnist --levels 2 --latent-dims 4,4 --channels 64,128 "
            '--coarse \'{"architecture": "mlp", "latent_dim": 16, "hidden": [512, 512], '
            '"likelihood": "gaussian"}\' --latent map '
            "--epochs 10 --batch-size 128 --lr 1e-3 --seed 0"
        ),
        "baseline": "fashion-conv-z32",
        "description": (
            "Fashion-MNIST 28x28: an MLP VAE on the 7x7 coarse image, then conditional VAEs with "
            "7x7 latent maps for the 14x14 and 28x28 levels, each conditioned on the reconstruction "
            "of the levels above (its prior a conv network of that image). Trained greedily, 10 "
            "epochs per level (the baseline fashion-conv-z32 had 30 epochs in one model)."
        ),
    },
}


def run(name: str, root: Path, resume: bool, data_dir: str | None) -> Path:
    out = root / name
    args = ["pyramid", "train", *shlex.split(PYRAMIDS[name]["args"]), "--out", str(out)]
    if data_dir:
        args += ["--data-dir", data_dir]
    if resume and (out / "checkpoint.safetensors").exists():
        args.append("--resume")
    elif out.exists():
        shutil.rmtree(out)
    if cli_main(args) != 0:
        raise SystemExit(f"training {name} failed")
    return out / "model"


def publish(name: str, directory: Path, data_dir: str | None) -> Path:
    model = pretrained.load_pyramid(directory)
    baseline = from_pretrained(PYRAMIDS[name]["baseline"])
    dataset = model.card["dataset"]
    x = load_dataset(dataset, "test", data_dir).x
    ours, theirs = reconstruction_rmse(model, x), reconstruction_rmse(baseline, x)
    params = sum(p.numel() for p in model.parameters())
    card = dict(model.card)
    card["name"] = name
    card["description"] = PYRAMIDS[name]["description"]
    card["command"] = f"python -m condvae pyramid train {PYRAMIDS[name]['args']} --out runs/{name}"
    card["evaluation_command"] = f"python benchmarks/pyramid.py --datasets {dataset}"
    card["usage"] = (
        "from condvae.pyramid.pretrained import load_pyramid\n\n"
        f'model = load_pyramid("{name}")\n'
        "samples = model.sample(8)  # [8, 1, C, H, W]\n"
        "partial = model.sample(8, start=x, keep=1)  # x's coarse image kept, finer levels sampled\n"
        "edited = model.edit(painting, 8)  # painting: [1, C, h, w] at a level's size"
    )
    card["notes"] = (
        "Command line: `python -m condvae pyramid sample --model NAME --image DATASET:test:0 --keep 1,2` "
        "and `python -m condvae pyramid edit --model NAME --painting coarse.png` (a greyscale PNG "
        "of the coarse size or of a finer level's). `--temperature 0.6` gives cleaner detail than "
        "the model's own spread (1.0)."
    )
    card["metrics"] = {
        f"test reconstruction sqrt(MSE), 0-255 ({len(x)} images)": f"{ours.mean():.2f} ± {ours.std():.2f}",
        f"plain VAE baseline {PYRAMIDS[name]['baseline']}": f"{theirs.mean():.2f} ± {theirs.std():.2f}",
        "parameters": params,
        "baseline parameters": sum(p.numel() for p in baseline.parameters()),
        "training time (s)": card["training"]["training_seconds"],
    }
    card["machine"] = machine()
    return save_pretrained(model, pretrained.PYRAMIDS.directory / name, card=card)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(PYRAMIDS))
    parser.add_argument("--root", default="runs/pyramids")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--publish", action="store_true")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    for name in args.only or list(PYRAMIDS):
        directory = run(name, Path(args.root), args.resume, args.data_dir)
        if args.publish:
            print(f"published {publish(name, directory, args.data_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
