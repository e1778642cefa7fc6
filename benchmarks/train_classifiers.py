"""Train and publish the small classifiers behind the Fréchet distance (condvae.classifier).

python benchmarks/train_classifiers.py              # mnist and fashion_mnist, 5 epochs each
python benchmarks/train_classifiers.py --partial    # the partial-image classifiers of design

Cross-entropy, Adam at a cosine learning rate down to 0, batch 128, a random shift of up to 2
pixels per batch; trained by ``condvae.loop`` (resumable) and scored on the test split. The
partial-image classifiers see each training image through a fresh random mask: half of them
``glimpses`` (0-12 squares), half the ``mixture`` partial encoders train on; their card gives the
test accuracy against the observed fraction and against the number of 4x4 glimpses.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from common import machine

from condvae.classifier import CLASSIFIERS, PartialClassifier, SmallCNN, save_classifier
from condvae.data import ImageData, fixed_binarize, load_dataset
from condvae.errors import CondVAEError
from condvae.loop import LoopConfig, Outcome, Phase, Trainee, run
from condvae.masks import make_mask, sample_masks
from condvae.streams import seed_for


@dataclass
class ClassifierTrainConfig(LoopConfig):
    dataset: str
    epochs: int = 5
    _: KW_ONLY
    lr_min: float = 0.0

    positive: ClassVar[tuple[str, ...]] = (*LoopConfig.positive, "epochs")


@torch.no_grad()
def accuracy(model: SmallCNN, x: torch.Tensor, labels: torch.Tensor, batch: int = 2000) -> float:
    model.eval()
    hits = sum(
        int((model(x[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return hits / len(x)


def _setup(
    dataset: str, out: str | Path, epochs: int, data_dir: str | None, seed: int
) -> tuple[ClassifierTrainConfig, ImageData, ImageData]:
    """The checked run config and the labelled train and test splits; seeds the initialisation."""
    cfg = ClassifierTrainConfig(dataset=dataset, out=str(out), epochs=epochs, data_dir=data_dir, seed=seed)
    cfg.check()
    train, test = load_dataset(dataset, "train", data_dir), load_dataset(dataset, "test", data_dir)
    if train.labels is None or test.labels is None:
        raise CondVAEError(f"dataset: {dataset!r} has no labels to train a classifier on")
    torch.manual_seed(seed_for(seed, "train/init"))
    return cfg, train, test


def train_classifier(
    dataset: str,
    out: str | Path,
    epochs: int = 5,
    data_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
) -> SmallCNN:
    """Train a SmallCNN on ``dataset``'s train split, score it on the test split, save it to ``out``."""
    cfg, train, test = _setup(dataset, out, epochs, data_dir, seed)
    model = SmallCNN(train.data_shape, int(train.labels.max()) + 1)
    steps = epochs * (len(train) // cfg.batch_size)

    def step(phase: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        shift = [int(s) for s in torch.randint(-2, 3, (2,), generator=gen)]
        x = torch.roll(train.x[batch], shifts=shift, dims=(-2, -1))
        return torch.nn.functional.cross_entropy(model(x), train.labels[batch])

    def save(outcome: Outcome, training: dict[str, Any]) -> None:
        model.card = {
            "name": f"{dataset}-cnn",
            "description": f"Small CNN classifier on {dataset}: the features of condvae's Fréchet distance.",
            "training": {"dataset": f"{dataset} (train split)", "epochs": epochs, **training},
            "metrics": {
                f"test accuracy ({len(test)} images)": round(accuracy(model, test.x, test.labels), 4)
            },
        }
        save_classifier(model, out)

    trainee = Trainee(model, [Phase(list(model.parameters()), steps)], len(train), step, save)
    run(cfg, trainee, resume, progress, desc=f"classifier {dataset}")
    return model


def partial_masks(n: int, data_shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Half ``glimpses``, half ``mixture``: the partial views design and inpainting produce."""
    half = n // 2
    return torch.cat(
        [sample_masks("glimpses", half, data_shape, gen), sample_masks("mixture", n - half, data_shape, gen)]
    )


def glimpse_grid_masks(n: int, k: int, data_shape: tuple[int, ...], patch: int, seed: int) -> torch.Tensor:
    """``n`` masks of ``k`` distinct random ``patch`` x ``patch`` cells of the image's patch grid."""
    _, h, w = data_shape
    rows, cols = h // patch, w // patch
    gen = torch.Generator().manual_seed(seed)
    pick = torch.rand(n, rows * cols, generator=gen).argsort(1)[:, :k]
    cells = torch.zeros(n, rows * cols, dtype=torch.bool).scatter_(1, pick, True).view(n, rows, cols)
    pixel = cells.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    full = torch.zeros(n, h, w, dtype=torch.bool)
    full[:, : rows * patch, : cols * patch] = pixel
    return full[:, None].expand(n, *data_shape)


@torch.no_grad()
def partial_scores(
    model: PartialClassifier, x: torch.Tensor, labels: torch.Tensor, binarized: bool = False
) -> dict[str, float]:
    """Test accuracy against the observed fraction (random pixels) and the number of glimpses
    (and on the fixed binarisation of the test images, for a classifier that reads them)."""
    model.eval()
    shape = tuple(x.shape[1:])

    def acc(masks: torch.Tensor) -> float:
        hits = sum(
            int((model(x[i : i + 2000], masks[i : i + 2000]).argmax(-1) == labels[i : i + 2000]).sum())
            for i in range(0, len(x), 2000)
        )
        return round(hits / len(x), 4)

    scores = {}
    for rate in (0.0, 0.05, 0.1, 0.25, 0.5, 1.0):
        masks = torch.stack([make_mask(f"random:{rate}", shape, seed=i) for i in range(len(x))])
        scores[f"test accuracy, {rate:.0%} random pixels observed"] = acc(masks)
    for k in (1, 2, 4, 8, 16):
        scores[f"test accuracy, {k} random 4x4 glimpses"] = acc(glimpse_grid_masks(len(x), k, shape, 4, k))
    if binarized:
        x = fixed_binarize(x)
        scores["test accuracy, binarised, all observed"] = acc(torch.ones_like(x, dtype=torch.bool))
        scores["test accuracy, binarised, 8 random 4x4 glimpses"] = acc(
            glimpse_grid_masks(len(x), 8, shape, 4, 8)
        )
    return scores


def train_partial_classifier(
    dataset: str,
    out: str | Path,
    epochs: int = 20,
    data_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
    hidden: tuple[int, ...] = (512, 128),
    binarized: float = 0.0,
) -> PartialClassifier:
    """Train a PartialClassifier on ``dataset``'s train split over random masks; score it; save it.

    ``binarized``: the fraction of training images shown as a fresh binarisation (pixels drawn
    with their grey level as probability), so that the classifier reads the binary images of a
    Bernoulli VAE as well as grey levels and decoder means.
    """
    cfg, train, test = _setup(dataset, out, epochs, data_dir, seed)
    model = PartialClassifier(train.data_shape, int(train.labels.max()) + 1, hidden, dataset)
    steps = epochs * (len(train) // cfg.batch_size)

    def step(phase: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        masks = partial_masks(len(batch), train.data_shape, gen)
        x = train.x[batch]
        if binarized:
            draw = torch.rand(len(batch), generator=gen) < binarized
            x = torch.where(draw.view(-1, 1, 1, 1), (torch.rand(x.shape, generator=gen) < x).to(x.dtype), x)
        return torch.nn.functional.cross_entropy(model(x, masks), train.labels[batch])

    def save(outcome: Outcome, training: dict[str, Any]) -> None:
        model.card = {
            "name": f"{dataset}-partial",
            "description": (
                f"Partial-image classifier g(c | x * m, m) on {dataset}: what experimental design "
                "scores glimpses with."
            ),
            "training": {
                "dataset": f"{dataset} (train split)",
                "epochs": epochs,
                "masks": "a fresh mask per image: half glimpses (0-12 squares of side 2-8), half mixture",
                "binarized": f"{binarized:.0%} of the images binarised afresh (for Bernoulli VAEs)",
                **training,
            },
            "metrics": partial_scores(model, test.x, test.labels, binarized > 0),
        }
        save_classifier(model, out)

    trainee = Trainee(model, [Phase(list(model.parameters()), steps)], len(train), step, save)
    run(cfg, trainee, resume, progress, desc=f"partial classifier {dataset}")
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["mnist", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=None, help="default 5 (20 with --partial)")
    parser.add_argument("--partial", action="store_true", help="the partial-image classifiers of design")
    parser.add_argument(
        "--binarized",
        type=float,
        default=None,
        help="fraction of images binarised afresh (--partial; default 0.5 for Bernoulli mnist)",
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--root", default="runs/classifiers", help="where the runs go")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs in --root")
    args = parser.parse_args(argv)
    epochs = args.epochs or (20 if args.partial else 5)
    for name in args.datasets:
        suffix = "partial" if args.partial else "cnn"
        out = Path(args.root) / f"{name}-{suffix}"
        resume = args.resume and (out / "checkpoint.safetensors").exists()
        if out.exists() and not resume:
            shutil.rmtree(out)
        if args.partial:
            binarized = args.binarized if args.binarized is not None else 0.5 if name == "mnist" else 0.0
            model = train_partial_classifier(
                name, out, epochs, args.data_dir, progress=False, resume=resume, binarized=binarized
            )
        else:
            model = train_classifier(name, out, epochs, args.data_dir, progress=False, resume=resume)
        flag = " --partial" if args.partial else ""
        model.card["command"] = (
            f"python benchmarks/train_classifiers.py --datasets {name} --epochs {epochs}{flag}"
        )
        model.card["machine"] = machine()
        save_classifier(model, CLASSIFIERS.directory / f"{name}-{suffix}")
        print(name, model.card["metrics"], model.card["training"]["training_seconds"], "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
