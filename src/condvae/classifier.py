"""A small image classifier per dataset: the feature space of the Fréchet distance.

design.md §6 asks for fidelity without downloaded networks, so the project trains its own
classifier (two conv layers, a 128-unit feature layer, a linear read-out) on each dataset's
training split and ships it. ``features(x)`` (the 128-d penultimate layer) plays the role
Inception features play in FID (Heusel et al. 2017); the classifier is also what Bayesian
experimental design scores glimpses with.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from condvae.checkpoint import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_bytes,
    read_tensors,
    render_card,
)
from condvae.data import load_dataset
from condvae.errors import CheckpointError, CondVAEError
from condvae.zoo import PRETRAINED_DIR

FORMAT = "condvae-classifier"
CLASSIFIERS_DIR = PRETRAINED_DIR / "classifiers"


class SmallCNN(nn.Module):
    """conv 32 - conv 64 (stride 2, 3x3) - 128 features - classes; images [B, C, H, W] in [0, 1]."""

    def __init__(
        self, data_shape: tuple[int, ...] = (1, 28, 28), classes: int = 10, width: int = 128
    ) -> None:
        super().__init__()
        self.data_shape, self.classes, self.width = (
            tuple(int(s) for s in data_shape),
            int(classes),
            int(width),
        )
        c, h, w = self.data_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * ((h + 3) // 4) * ((w + 3) // 4), width),
            nn.ReLU(),
        )
        self.readout = nn.Linear(width, classes)
        self.card: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        return {
            "architecture": "small-cnn",
            "data_shape": list(self.data_shape),
            "classes": self.classes,
            "width": self.width,
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d penultimate layer, ``[..., width]``."""
        lead = x.shape[: x.dim() - 3]
        return self.body(x.reshape(-1, *self.data_shape)).reshape(*lead, self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, ``[..., classes]``."""
        return self.readout(self.features(x))


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
) -> SmallCNN:
    """Adam, batch 128, random 2-pixel shifts; scored on the test split; saved to ``out``."""
    train, test = load_dataset(dataset, "train", data_dir), load_dataset(dataset, "test", data_dir)
    if train.labels is None or test.labels is None:
        raise CondVAEError(f"dataset: {dataset!r} has no labels to train a classifier on")
    torch.manual_seed(seed)
    classes = int(train.labels.max()) + 1
    model = SmallCNN(train.data_shape, classes)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * (len(train) // 128)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps)
    started = time.perf_counter()
    bar = tqdm(total=steps, disable=not progress, desc=f"classifier {dataset}")
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        model.train()
        for i in range(len(train) // 128):
            idx = order[i * 128 : (i + 1) * 128]
            shift = [int(s) for s in torch.randint(-2, 3, (2,))]
            x = torch.roll(train.x[idx], shifts=shift, dims=(-2, -1))
            loss = nn.functional.cross_entropy(model(x), train.labels[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            schedule.step()
            bar.update(1)
    bar.close()
    acc = accuracy(model, test.x, test.labels)
    model.card = {
        "name": f"{dataset}-cnn",
        "description": f"Small CNN classifier on {dataset}: the feature space of condvae's Fréchet distance.",
        "training": {
            "dataset": f"{dataset} (train split)",
            "epochs": epochs,
            "optimiser": "Adam, lr 1e-3 cosine-decayed, batch 128, random shifts of up to 2 pixels",
            "seed": seed,
            "training_seconds": round(time.perf_counter() - started, 1),
        },
        "metrics": {f"test accuracy ({len(test)} images)": round(acc, 4)},
    }
    save_classifier(model, out)
    return model


def save_classifier(model: SmallCNN, directory: str | Path) -> Path:
    directory = Path(directory)
    config = {"format": FORMAT, "format_version": 1, "model": model.config(), "card": model.card}
    atomic_save_tensors(directory / WEIGHTS_FILE, model.state_dict(), {"format": FORMAT})
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    atomic_write_bytes(directory / CARD_FILE, render_card(config).encode())
    return directory


def load_classifier(name: str | Path, device: str | torch.device = "cpu") -> SmallCNN:
    """A bundled classifier by dataset (``mnist``, ``fashion_mnist``) or a saved directory."""
    directory = CLASSIFIERS_DIR / f"{name}-cnn" if (CLASSIFIERS_DIR / f"{name}-cnn").is_dir() else Path(name)
    path = directory / CONFIG_FILE
    if not path.is_file():
        bundled = sorted(p.name for p in CLASSIFIERS_DIR.iterdir()) if CLASSIFIERS_DIR.is_dir() else []
        raise CondVAEError(f"classifier: no classifier {str(name)!r}; bundled ones are {bundled}")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise CheckpointError(f"classifier: {str(path)!r} is not a condvae classifier")
    spec = dict(config["model"])
    spec.pop("architecture")
    model = SmallCNN(tuple(spec.pop("data_shape")), **spec)
    tensors, _ = read_tensors(directory / WEIGHTS_FILE)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"classifier: {str(directory)!r} does not match its config ({exc})") from None
    model.card = config.get("card", {})
    return model.to(device).eval()
