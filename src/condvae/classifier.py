"""Small classifiers per dataset, trained and shipped by the project (no downloaded networks).

- ``SmallCNN`` (two conv layers, a 128-unit feature layer, a linear read-out) reads whole images;
  ``features(x)``, its 128-d penultimate layer, plays the role Inception features play in FID
  (Heusel et al. 2017).
- ``PartialClassifier`` g(c | x * m, m) reads partial images: an MLP over the observed pixels and
  the mask, trained over random masks (glimpses, boxes, random pixels). Experimental design scores
  candidate glimpses with it (Harvey, Naderiparizi & Wood 2022, section 5). Its first layer is
  affine in the pixels, so observing one more patch changes the first layer's pre-activation by
  the patch's columns only: ``glimpse_logits`` scores every candidate patch of every completion
  from that update, at a cost that does not grow with the image's size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from condvae.errors import CondVAEError
from condvae.store import Kind, bundled, load, register, save_pretrained


class Classifier(nn.Module):
    """What the store saves as a classifier: a config, a card, a number of classes."""

    classes: int
    card: dict[str, Any]

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


class SmallCNN(Classifier):
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


class PartialClassifier(Classifier):
    """g(c | x * m, m): logits from the observed pixels and the mask, ``[2 D] -> hidden -> classes``.

    ``dataset`` names what it was trained on, so that design can refuse a classifier of another
    dataset before any work.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (1, 28, 28),
        classes: int = 10,
        hidden: tuple[int, ...] = (512, 128),
        dataset: str = "",
    ) -> None:
        super().__init__()
        if not hidden:
            raise CondVAEError("hidden: a partial classifier needs at least one hidden layer")
        self.data_shape, self.classes = tuple(int(s) for s in data_shape), int(classes)
        self.hidden, self.dataset = tuple(int(h) for h in hidden), str(dataset)
        self.dim = math.prod(self.data_shape)
        self.first = nn.Linear(2 * self.dim, self.hidden[0])
        layers: list[nn.Module] = []
        for a, b in zip(self.hidden, (*self.hidden[1:], self.classes), strict=True):
            layers += [nn.ReLU(), nn.Linear(a, b)]
        self.rest = nn.Sequential(*layers)
        self.card = {}

    def config(self) -> dict[str, Any]:
        return {
            "architecture": "partial-mlp",
            "data_shape": list(self.data_shape),
            "classes": self.classes,
            "hidden": list(self.hidden),
            "dataset": self.dataset,
        }

    def _pre(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, mask = torch.broadcast_tensors(x, mask)
        lead = x.shape[: x.dim() - len(self.data_shape)]
        x, m = x.reshape(*lead, self.dim), mask.reshape(*lead, self.dim).to(x.dtype)
        return self.first(torch.cat([torch.where(m > 0, x, torch.zeros_like(x)), m], -1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Class logits ``[..., classes]`` for images ``x`` and masks of the same shape."""
        return self.rest(self._pre(x, mask))

    def glimpse_logits(
        self, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Logits after observing candidate c of completion n: ``[B, N, C, classes]``.

        ``x``, ``mask``: ``[B, *data_shape]``; ``fill``: completions ``[B, N, *data_shape]``;
        ``candidates``: ``[C, K]`` flat indices of each candidate's entries (padded with ``D``,
        an index that adds nothing). Only the candidate's still unobserved entries change: with
        W = [W_x, W_m] the first layer, the pre-activation gains
        ``W_x[:, l] (x_hat_n)_l + W_m[:, l] 1`` over those entries l.
        """
        b, n, (c, k) = x.shape[0], fill.shape[1], candidates.shape
        base = self._pre(x, mask)  # [B, H]
        zero = torch.zeros(self.first.out_features, 1, dtype=base.dtype, device=base.device)
        w_x = torch.cat([self.first.weight[:, : self.dim], zero], 1)[:, candidates]  # [H, C, K]
        w_m = torch.cat([self.first.weight[:, self.dim :], zero], 1)[:, candidates]
        new = torch.cat([~mask.reshape(b, self.dim), mask.new_zeros(b, 1)], 1)[:, candidates]  # [B, C, K]
        new = new.to(base.dtype)
        # laid out [C, B, N, H] so that one batched matmul per candidate writes the layer once
        # and the activation runs in place: the cost is memory traffic, not arithmetic
        bias = base[None] + torch.einsum("bck,hck->cbh", new, w_m)  # [C, B, H]
        flat = torch.cat([fill.reshape(b, n, self.dim), fill.new_zeros(b, n, 1)], 2)
        values = flat[:, :, candidates].permute(2, 0, 1, 3) * new.transpose(0, 1)[:, :, None]  # [C, B, N, K]
        pre = torch.bmm(values.reshape(c, b * n, k), w_x.permute(1, 2, 0))  # [C, B * N, H]
        pre.view(c, b, n, -1).add_(bias[:, :, None])
        logits = pre
        for layer in self.rest:  # in place where it can be: these are the largest tensors here
            logits = torch.relu_(logits) if isinstance(layer, nn.ReLU) else layer(logits)
        return logits.reshape(c, b, n, -1).permute(1, 2, 0, 3)


def _build(config: dict[str, Any], vae: None) -> Classifier:
    model = config["model"]
    if model.get("architecture") == "partial-mlp":
        return PartialClassifier(
            tuple(model["data_shape"]), model["classes"], tuple(model["hidden"]), model["dataset"]
        )
    return SmallCNN(tuple(model["data_shape"]), model["classes"], model["width"])


CLASSIFIERS = register(
    Kind("classifier", "condvae-classifier", "classifiers", Classifier, _build, "condvae.load_classifier")
)
save_classifier = save_pretrained


def load_classifier(name: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """A bundled classifier by dataset (``mnist``, ``fashion_mnist``) or a saved directory."""
    return load(CLASSIFIERS, f"{name}-cnn" if f"{name}-cnn" in bundled(CLASSIFIERS) else name, device)


def load_partial_classifier(name: str | Path, device: str | torch.device = "cpu") -> PartialClassifier:
    """A bundled partial-image classifier by dataset (``mnist``, ``fashion_mnist``) or a directory."""
    key = f"{name}-partial"
    model = load(CLASSIFIERS, key if key in bundled(CLASSIFIERS) else name, device)
    if not isinstance(model, PartialClassifier):
        raise CondVAEError(
            f"classifier: {str(name)!r} reads whole images; design needs a partial-image classifier "
            f"(bundled: {[c for c in bundled(CLASSIFIERS) if c.endswith('-partial')]})"
        )
    return model
