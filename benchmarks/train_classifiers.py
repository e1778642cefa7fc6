"""Train and publish the small classifiers behind the Fréchet distance (condvae.classifier).

python benchmarks/train_classifiers.py              # mnist and fashion_mnist, 5 epochs each

Cross-entropy, Adam at a cosine learning rate down to 0, batch 128, a random shift of up to 2
pixels per batch; trained by ``condvae.loop`` (resumable) and scored on the test split.
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

from condvae.classifier import CLASSIFIERS, SmallCNN, save_classifier
from condvae.data import load_dataset
from condvae.errors import CondVAEError
from condvae.loop import LoopConfig, Outcome, Phase, Trainee, run
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
    cfg = ClassifierTrainConfig(dataset=dataset, out=str(out), epochs=epochs, data_dir=data_dir, seed=seed)
    cfg.check()
    train, test = load_dataset(dataset, "train", data_dir), load_dataset(dataset, "test", data_dir)
    if train.labels is None or test.labels is None:
        raise CondVAEError(f"dataset: {dataset!r} has no labels to train a classifier on")
    torch.manual_seed(seed_for(seed, "train/init"))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["mnist", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--root", default="runs/classifiers", help="where the runs go")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs in --root")
    args = parser.parse_args(argv)
    for name in args.datasets:
        out = Path(args.root) / name
        resume = args.resume and (out / "checkpoint.safetensors").exists()
        if out.exists() and not resume:
            shutil.rmtree(out)
        model = train_classifier(name, out, args.epochs, args.data_dir, progress=False, resume=resume)
        model.card["command"] = (
            f"python benchmarks/train_classifiers.py --datasets {name} --epochs {args.epochs}"
        )
        model.card["machine"] = machine()
        save_classifier(model, CLASSIFIERS.directory / f"{name}-cnn")
        print(name, model.card["metrics"], model.card["training"]["training_seconds"], "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
