"""Greedy training of a :class:`PyramidVAE`, coarse to fine, resumable after a kill.

Level 0 (the coarse VAE) is trained first on G_K, then each finer level on its residual given
the coarser image, each a phase of ``condvae.loop`` (its own Adam optimiser, cosine learning
rate over its own ``epochs`` and KL weight lambda_k in the model). Optional augmentation for
small sets (Olivetti): a random horizontal flip and a shift of up to ``shift`` pixels
(reflected borders) per image.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from condvae.data import load_dataset
from condvae.data.augment import augment
from condvae.errors import CondVAEError
from condvae.loop import LoopConfig, Outcome, Phase, Trainee, run
from condvae.pyramid.model import PyramidVAE
from condvae.store import save_pretrained
from condvae.streams import seed_for


@dataclass
class PyramidTrainConfig(LoopConfig):
    """Everything that defines a pyramid training run."""

    dataset: str
    model: dict[str, Any] = field(default_factory=dict)  # PyramidVAE arguments (data_shape from the data)
    image_size: list[int] | None = None
    epochs: int = 50  # per level
    augment: bool = False
    shift: int = 2
    _: KW_ONLY
    batch_size: int = 32
    lr_min: float = 5e-5
    checkpoint_every: int = 500

    positive: ClassVar[tuple[str, ...]] = (*LoopConfig.positive, "epochs")
    non_negative: ClassVar[tuple[str, ...]] = ("shift",)


def train_pyramid(
    cfg: PyramidTrainConfig, resume: bool = False, progress: bool = True, data: torch.Tensor | None = None
) -> PyramidVAE:
    """Train every level in turn; returns the model and writes ``out/model`` (save_pretrained)."""
    cfg.check()
    if data is None:
        size = tuple(cfg.image_size) if cfg.image_size else None
        data = load_dataset(cfg.dataset, "train", cfg.data_dir, size=size).x  # type: ignore[arg-type]
    x_all = data[: cfg.limit_train] if cfg.limit_train else data
    if len(x_all) < cfg.batch_size:
        raise CondVAEError(f"batch_size: {cfg.batch_size} is larger than the {len(x_all)} training images")
    torch.manual_seed(seed_for(cfg.seed, "train/init"))
    model = PyramidVAE(**{**cfg.model, "data_shape": tuple(x_all.shape[1:])}).to(cfg.device)
    per_level = cfg.epochs * (len(x_all) // cfg.batch_size)
    phases = [Phase(list(level.parameters()), per_level) for level in (model.coarse, *model.finer)]

    def step(level: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = augment(x_all[batch], cfg.shift, gen) if cfg.augment else x_all[batch]
        return -model.level_elbo(level, x.to(cfg.device)).mean()

    def save(outcome: Outcome, training: dict[str, Any]) -> None:
        training = {
            "dataset": f"{cfg.dataset} (train split)",
            "epochs_per_level": cfg.epochs,
            **training,
            "augmentation": f"flips and shifts of up to {cfg.shift} px" if cfg.augment else "none",
        }
        name = f"{cfg.dataset} Laplacian pyramid VAE ({model.levels + 1} levels)"
        model.card = {"name": name, "dataset": cfg.dataset, "training": training}
        save_pretrained(model, Path(cfg.out) / "model", card=model.card)  # type: ignore[arg-type]

    run(cfg, Trainee(model, phases, len(x_all), step, save), resume, progress, desc=f"pyramid {cfg.dataset}")
    return model
