"""Laplacian pyramid against a plain VAE of about the same size (the comparison of Dorta et al.,
"Laplacian Pyramid of Conditional Variational Autoencoders", 2017).

    python benchmarks/pyramid.py                              # both bundled pairs, tables only
    python benchmarks/pyramid.py --figures docs/pyramid       # also the example PNGs
    python benchmarks/pyramid.py --datasets olivetti --pyramid runs/p/model --baseline runs/b/model

Prints three tables: reconstruction sqrt(MSE) on the 0-255 scale over the whole test split
(mean and standard deviation across images); sharpness, the mean energy of the finest Laplacian
band of samples and reconstructions against that of the real test images; and editing, how
close the coarse level of samples drawn for a painted coarse image stays to the painting. The
figures are drawn from the models alone (samples, partial samples of samples, an edit of a
painted coarse image), so no dataset image is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import machine
from PIL import Image
from torch.nn import functional as F

from condvae import load
from condvae.data import load_dataset
from condvae.plotting import save_rows
from condvae.pyramid.laplacian import gaussian_pyramid
from condvae.pyramid.metrics import finest_band_energy, reconstruction_rmse
from condvae.pyramid.model import PyramidVAE
from condvae.pyramid.pretrained import load_pyramid

PAIRS = {
    "olivetti": ("olivetti-pyramid", "olivetti-conv-z160"),
    "fashion_mnist": ("fashion-pyramid", "fashion-conv-z32"),
}


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def latents(model: torch.nn.Module) -> str:
    if isinstance(model, PyramidVAE):
        sizes = [model.coarse.latent_dim]  # type: ignore[union-attr]
        for level in model.finer:
            z = level.prior(torch.zeros(1, *level.shape)).loc  # type: ignore[operator]
            sizes.append(z[0].numel())
        return " + ".join(map(str, sizes))
    return str(model.latent_dim)  # type: ignore[union-attr]


SHIRT = [  # a 7x7 T-shirt painted by hand, for Fashion-MNIST's coarse level
    [0.0, 0.5, 0.7, 0.6, 0.7, 0.5, 0.0],
    [0.5, 0.8, 0.8, 0.8, 0.8, 0.8, 0.5],
    [0.4, 0.8, 0.8, 0.8, 0.8, 0.8, 0.4],
    [0.0, 0.8, 0.8, 0.8, 0.8, 0.8, 0.0],
    [0.0, 0.8, 0.8, 0.8, 0.8, 0.8, 0.0],
    [0.0, 0.8, 0.8, 0.8, 0.8, 0.8, 0.0],
    [0.0, 0.5, 0.6, 0.6, 0.6, 0.5, 0.0],
]


def painting_for(model: PyramidVAE, dataset: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A coarse sample of the model and a painting: on faces the sample with a dark band painted
    over the eyes, on 28x28 images a T-shirt painted from scratch. Returns (sample, painting)."""
    torch.manual_seed(seed)
    coarse = model.sample_levels(1)[0].clamp(0, 1)
    if dataset == "fashion_mnist":
        return coarse, torch.tensor(SHIRT).expand_as(coarse).clone()
    painting = coarse.clone()
    h, w = painting.shape[-2:]
    painting[..., int(0.36 * h) : int(0.50 * h), int(0.15 * w) : int(0.85 * w)] = 0.05
    return coarse, painting


def enlarge(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="nearest")


def run(dataset: str, pyramid: PyramidVAE, baseline: torch.nn.Module, figures: Path | None, n: int) -> dict:
    x = load_dataset(dataset, "test").x
    rows: dict = {"dataset": dataset, "images": len(x), "models": []}
    for name, model in (("pyramid", pyramid), ("plain VAE", baseline)):
        started = time.perf_counter()
        rmse = reconstruction_rmse(model, x)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        rows["models"].append(
            {
                "name": name,
                "model": model.card.get("name", "?"),
                "params": params(model),  # type: ignore[union-attr]
                "latents": latents(model),
                "mean": float(rmse.mean()),
                "std": float(rmse.std()),
                "ms": 1000 * seconds / len(x),
            }
        )
    torch.manual_seed(0)
    real = finest_band_energy(x).mean()
    with torch.no_grad():
        sources = {
            "real test images": x,
            "pyramid samples": pyramid.sample(n)[:, 0],
            "pyramid partial samples (coarse level of test images kept)": pyramid.sample(
                1, start=x[:n], keep=1
            )[0],
            "pyramid reconstructions": pyramid.reconstruct(x[:n]),
            "plain VAE samples": baseline.sample(n),  # type: ignore[operator]
            "plain VAE reconstructions": baseline.reconstruct(x[:n]),  # type: ignore[operator]
        }
    energies = {k: float(finest_band_energy(v).mean()) for k, v in sources.items()}
    rows["sharpness"] = [(k, e, e / float(real)) for k, e in energies.items()]
    # editing: the samples' coarse level against the painting, and a baseline of unrelated samples
    k = pyramid.levels
    dist = []
    for seed in range(10):
        _, painting = painting_for(pyramid, dataset, seed)
        torch.manual_seed(seed)
        edited = pyramid.edit(painting, n=16)[:, 0]
        top = gaussian_pyramid(edited, k)[-1]
        other = gaussian_pyramid(pyramid.sample(16)[:, 0], k)[-1]
        dist.append(
            (
                ((top - painting) * 255).pow(2).flatten(1).mean(1).sqrt().mean(),
                ((other - painting) * 255).pow(2).flatten(1).mean(1).sqrt().mean(),
            )
        )
    rows["edit"] = [float(torch.stack(c).mean()) for c in zip(*dist, strict=True)]
    if figures is not None:
        draw(dataset, pyramid, baseline, figures)
    return rows


def draw(dataset: str, pyramid: PyramidVAE, baseline: torch.nn.Module, figures: Path) -> None:
    figures.mkdir(parents=True, exist_ok=True)
    size = pyramid.data_shape[-2:]
    rows = []
    for temperature in (1.0, 0.6):
        torch.manual_seed(1)
        rows.append((f"pyramid T={temperature}", pyramid.sample(8, temperature=temperature)[:, 0]))
    torch.manual_seed(1)
    rows.append(("plain VAE", baseline.sample(8)))  # type: ignore[operator]
    save_rows(rows, figures / f"{dataset}-samples.png")
    torch.manual_seed(2)
    starts = pyramid.sample(2)[:, 0]
    rows = []
    for i, start in enumerate(starts):
        for keep in range(1, pyramid.levels + 1):
            partial = pyramid.sample(7, start=start[None], keep=keep)[:, 0]
            rows.append((f"sample {i + 1}, keep {keep}", torch.cat([start[None], partial])))
    save_rows(rows, figures / f"{dataset}-partial.png")
    coarse, painting = painting_for(pyramid, dataset, seed=3)
    torch.manual_seed(3)
    before, after = pyramid.edit(coarse, 7)[:, 0], pyramid.edit(painting, 7)[:, 0]
    save_rows(
        [
            ("coarse sample", torch.cat([enlarge(coarse, size), before])),
            ("painted", torch.cat([enlarge(painting, size), after])),
        ],
        figures / f"{dataset}-edit.png",
    )
    grey = (painting[0, 0] * 255).round().to(torch.uint8).numpy()
    Image.fromarray(grey, mode="L").save(figures / f"{dataset}-painting.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--pyramid", default=None, help="a pyramid directory (one dataset)")
    parser.add_argument("--baseline", default=None, help="a VAE directory (one dataset)")
    parser.add_argument("--samples", type=int, default=500, help="samples for the sharpness table")
    parser.add_argument("--figures", default=None, help="folder for the example PNGs")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for dataset in args.datasets:
        pyramid = load_pyramid(args.pyramid or PAIRS[dataset][0])
        baseline = load(args.baseline or PAIRS[dataset][1])
        baseline.eval()
        results.append(
            run(dataset, pyramid, baseline, Path(args.figures) if args.figures else None, args.samples)
        )
    print(machine())
    print("\nReconstruction of the test split, sqrt(MSE) on the 0-255 scale")
    print(
        "| dataset | model | name | parameters | latents | test images | sqrt(MSE) mean | std | ms / image |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        for m in r["models"]:
            print(
                f"| {r['dataset']} | {m['name']} | {m['model']} | {m['params']:,} | {m['latents']} | "
                f"{r['images']} | {m['mean']:.2f} | {m['std']:.2f} | {m['ms']:.2f} |"
            )
    print(f"\nSharpness: mean finest-band energy (0-255 scale; {args.samples} samples, decoder means)")
    print("| dataset | images | energy | ratio to real |")
    print("| --- | --- | --- | --- |")
    for r in results:
        for name, energy, ratio in r["sharpness"]:
            print(f"| {r['dataset']} | {name} | {energy:.1f} | {ratio:.2f} |")
    print("\nEditing: sqrt(MSE) (0-255) between the painting and the coarse level of 16 edited samples")
    print("| dataset | edited samples | unrelated samples |")
    print("| --- | --- | --- |")
    for r in results:
        print(f"| {r['dataset']} | {r['edit'][0]:.2f} | {r['edit'][1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
