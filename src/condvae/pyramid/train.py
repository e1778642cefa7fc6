"""Greedy training of a :class:`PyramidVAE`, coarse to fine, resumable after a kill.

Level 0 (the coarse VAE) is trained first on G_K, then each finer level on its residual given
the *true* coarser image (paper 002), each by Adam with a cosine learning rate over its own
``epochs`` and its own KL weight lambda_k (in the model). Only the level being trained is given
to the optimiser. Optional augmentation for small sets (Olivetti): a random horizontal flip and
a shift of up to ``shift`` pixels (reflected borders) per image.

Like ``condvae.train``, the loop is a pure function of the global step (data order seeded by
(seed, level, epoch), augmentation and the draws of z by (seed, step)), and the weights, the
current level's Adam moments and the step are written atomically every ``checkpoint_every``
steps and at the end of each level, so a killed run resumes to the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from condvae.checkpoint import atomic_write_bytes, save_pretrained
from condvae.data import load_dataset
from condvae.data.augment import augment
from condvae.errors import CondVAEError
from condvae.pyramid.model import PyramidVAE
from condvae.train import (
    adam_step,
    checkpoint_path,
    learning_rate,
    read_checkpoint,
    restore_optimizer,
    run_identity,
    write_checkpoint,
)


@dataclass
class PyramidTrainConfig:
    dataset: str
    out: str
    model: dict[str, Any] = field(default_factory=dict)  # PyramidVAE arguments (data_shape from the data)
    data_dir: str | None = None
    image_size: list[int] | None = None
    epochs: int = 50  # per level
    batch_size: int = 32
    lr: float = 1e-3
    lr_min: float = 5e-5
    augment: bool = False
    shift: int = 2
    seed: int = 0
    checkpoint_every: int = 500
    limit_train: int | None = None
    device: str = "cpu"

    def identity(self) -> dict[str, Any]:
        return run_identity(self)


def train_pyramid(
    cfg: PyramidTrainConfig, resume: bool = False, progress: bool = True, data: torch.Tensor | None = None
) -> PyramidVAE:
    """Train every level in turn; returns the model and writes ``out/model`` (save_pretrained)."""
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise CondVAEError(
            f"epochs, batch_size: expected positive integers, got {cfg.epochs}, {cfg.batch_size}"
        )
    out = Path(cfg.out)
    ckpt = checkpoint_path(out, resume)
    if data is None:
        size = tuple(cfg.image_size) if cfg.image_size else None
        data = load_dataset(cfg.dataset, "train", cfg.data_dir, size=size).x  # type: ignore[arg-type]
    x_all = data[: cfg.limit_train] if cfg.limit_train else data
    n = len(x_all)
    if n < cfg.batch_size:
        raise CondVAEError(f"batch_size: {cfg.batch_size} is larger than the {n} training images")
    torch.manual_seed(cfg.seed)
    model = PyramidVAE(**{**cfg.model, "data_shape": tuple(x_all.shape[1:])}).to(cfg.device)
    owners = [model.coarse, *model.finer]
    per_epoch = n // cfg.batch_size
    per_level = cfg.epochs * per_epoch
    total = per_level * len(owners)
    step, elapsed = 0, 0.0
    optim = torch.optim.Adam(owners[0].parameters(), lr=cfg.lr)
    if resume:
        tensors, meta, loop = read_checkpoint(ckpt, cfg.identity())
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        step, elapsed = loop["step"], loop["elapsed"]
        optim = torch.optim.Adam(owners[min(step // per_level, len(owners) - 1)].parameters(), lr=cfg.lr)
        if step % per_level:  # mid-level: its Adam moments continue
            restore_optimizer(optim, tensors, meta["param_groups"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())

    def save_checkpoint() -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        loop = {"step": step, "elapsed": elapsed + time.perf_counter() - started}
        write_checkpoint(ckpt, tensors, optim, cfg.identity(), loop)

    started = time.perf_counter()
    model.train()
    bar = tqdm(total=total, initial=step, disable=not progress, desc=f"pyramid {cfg.dataset}")
    log = out / "log.jsonl"
    while step < total:
        level, local = divmod(step, per_level)
        if local == 0:
            optim = torch.optim.Adam(owners[level].parameters(), lr=cfg.lr)
        epoch, i = divmod(local, per_epoch)
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + 1009 * level + epoch)
        )
        x = x_all[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
        if cfg.augment:
            x = augment(x, cfg.shift, torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * step + 1))
        torch.manual_seed(cfg.seed * 1_000_003 + 7919 * step + 2)  # this step's z ~ q
        loss = -model.level_elbo(level, x.to(cfg.device)).mean()
        adam_step(optim, loss, learning_rate(cfg, local, per_level), step)
        step += 1
        bar.update(1)
        if step % per_epoch == 0:
            with open(log, "a") as handle:
                handle.write(
                    json.dumps(
                        {"step": step, "level": level, "epoch": epoch + 1, "loss": float(loss.detach())}
                    )
                    + "\n"
                )
        if step % cfg.checkpoint_every == 0 or step % per_level == 0:
            save_checkpoint()
    bar.close()
    model.eval()
    seconds = elapsed + time.perf_counter() - started
    card = {
        "name": f"{cfg.dataset} Laplacian pyramid VAE ({model.levels + 1} levels)",
        "dataset": cfg.dataset,
        "training": {
            "dataset": f"{cfg.dataset} (train split)",
            "epochs_per_level": cfg.epochs,
            "batch_size": cfg.batch_size,
            "optimiser": f"Adam, lr {cfg.lr} cosine-decayed to {cfg.lr_min} per level",
            "augmentation": f"flips and shifts of up to {cfg.shift} px" if cfg.augment else "none",
            "seed": cfg.seed,
            "training_seconds": round(seconds, 1),
            "torch": torch.__version__,
        },
    }
    save_pretrained(model, out / "model", card=card)  # type: ignore[arg-type]
    model.card = card
    return model
