"""A small image classifier per dataset: the feature space of the Fréchet distance.

Fidelity is measured without downloaded networks: the project trains its own classifier (two
conv layers, a 128-unit feature layer, a linear read-out) on each dataset's training split and
ships it. ``features(x)`` (the 128-d penultimate layer) plays the role
Inception features play in FID (Heusel et al. 2017); the classifier is also what Bayesian
experimental design scores glimpses with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from condvae.store import Kind, bundled, load, register, save_pretrained


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


def _build(config: dict[str, Any], vae: None) -> SmallCNN:
    model = config["model"]
    return SmallCNN(tuple(model["data_shape"]), model["classes"], model["width"])


CLASSIFIERS = register(
    Kind("classifier", "condvae-classifier", "classifiers", SmallCNN, _build, "condvae.load_classifier")
)
save_classifier = save_pretrained


def load_classifier(name: str | Path, device: str | torch.device = "cpu") -> SmallCNN:
    """A bundled classifier by dataset (``mnist``, ``fashion_mnist``) or a saved directory."""
    return load(CLASSIFIERS, f"{name}-cnn" if f"{name}-cnn" in bundled(CLASSIFIERS) else name, device)
