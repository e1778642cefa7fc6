"""Training a partial encoder over random masks with the VAE frozen (paper 000, §3).

    O_for (IPA):    min_psi  E_x E_m E_q(z|x) [ -log r_psi(z | x * m, m) ]
                    = E_x E_m KL(q(z | x) || r_psi(z | x_o, m)) + const    (mass-covering)
    O_rev (IPA-R):  max_psi  E_x E_m E_r [ log p(x_o | z) + log p(z) - log r_psi(z | x_o, m) ]
                    (the amortised C-ELBO; mode-seeking)

x runs over the training split (dynamically binarised for Bernoulli VAEs), m over a mask
family (``mixture`` by default). Only psi is trained. As ``condvae.train`` does for VAEs, the
loop is a pure function of the step (data order seeded by (seed, epoch); masks, binarisation
and noise seeded by (seed, step)), and the weights, Adam moments and counters are written
atomically every ``checkpoint_every`` steps, so a killed run resumes to the same result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from condvae.checkpoint import atomic_save_tensors, atomic_write_bytes, read_tensors
from condvae.conditioning.variational import frozen
from condvae.data import fixed_binarize, load_dataset
from condvae.errors import CheckpointError, CondVAEError
from condvae.masks import sample_masks
from condvae.models import VAE
from condvae.partial.encoder import COVARIANCES, PartialEncoder, build_partial_encoder
from condvae.partial.pretrained import save_partial_encoder
from condvae.train import (
    adam_step,
    checkpoint_path,
    learning_rate,
    read_checkpoint,
    restore_optimizer,
    run_identity,
    write_checkpoint,
)
from condvae.zoo import load

OBJECTIVES = {"forward": "O_for (IPA)", "reverse": "O_rev (IPA-R)"}
BEST = "best.safetensors"
LOG = "log.jsonl"


@dataclass
class PartialTrainConfig:
    """Everything that defines a partial-encoder run (written to ``out/train_config.json``)."""

    vae: str  # a bundled model's name or a pretrained directory
    out: str
    objective: str = "forward"
    dataset: str | None = None  # default: the dataset in the VAE's card
    data_dir: str | None = None
    masks: str = "mixture"
    covariance: str = "diagonal"
    hidden: list[int] | None = None
    steps: int = 20000
    batch_size: int = 128
    samples: int = 1  # O_rev: draws of z per item
    lr: float = 1e-3
    lr_min: float = 1e-5
    seed: int = 0
    checkpoint_every: int = 500
    valid_every: int = 1000
    valid_size: int = 1000
    limit_train: int | None = None
    device: str = "cpu"

    def identity(self) -> dict[str, Any]:
        return run_identity(self)


@dataclass
class PartialTrainResult:
    encoder: PartialEncoder
    steps: int
    best_valid: float | None
    seconds: float
    out: Path


def _validate(cfg: PartialTrainConfig) -> None:
    if cfg.objective not in OBJECTIVES:
        raise CondVAEError(f"objective: expected one of {sorted(OBJECTIVES)}, got {cfg.objective!r}")
    if cfg.covariance not in COVARIANCES:
        raise CondVAEError(f"covariance: expected one of {COVARIANCES}, got {cfg.covariance!r}")
    for name in ("steps", "batch_size", "samples", "checkpoint_every", "valid_every", "valid_size"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise CondVAEError(f"lr: expected a positive learning rate, got {cfg.lr}")


def _loss(
    cfg: PartialTrainConfig, encoder: PartialEncoder, vae: VAE, x: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    if cfg.objective == "forward":
        return encoder.forward_kl(vae, x, mask)
    return encoder.reverse_loss(vae, x, mask, cfg.samples)


def _data(
    cfg: PartialTrainConfig, vae: VAE, data: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if data is not None:
        train_x, valid_x = data
    else:
        dataset = cfg.dataset or vae.card.get("dataset")
        if not dataset:
            raise CondVAEError("dataset: the VAE's card names no dataset; pass --dataset")
        size = tuple(vae.data_shape[1:]) if len(vae.data_shape) == 3 else None
        train_x = load_dataset(dataset, "train", cfg.data_dir, size=size).x  # type: ignore[arg-type]
        valid_x = load_dataset(dataset, "valid", cfg.data_dir, size=size).x  # type: ignore[arg-type]
    for arg, x in (("data[0]", train_x), ("data[1]", valid_x)):
        vae.check_x(x if vae.likelihood.name != "bernoulli" else x.round(), arg)
    if cfg.limit_train:
        train_x = train_x[: cfg.limit_train]
    if len(train_x) < cfg.batch_size:
        raise CondVAEError(f"batch_size: {cfg.batch_size} is larger than the {len(train_x)} training items")
    return train_x.float(), valid_x.float()


def _has_encoder(vae: VAE, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            vae.encode(x.to(vae.device))
    except CondVAEError:
        return False
    return True


def train_partial_encoder(
    cfg: PartialTrainConfig,
    resume: bool = False,
    progress: bool = True,
    vae: VAE | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PartialTrainResult:
    """Train a partial encoder for ``cfg.vae`` (or the ``vae`` given) on ``cfg.dataset`` (or
    ``data = (train_x, valid_x)``); see the module docstring."""
    _validate(cfg)
    out = Path(cfg.out)
    ckpt_path = checkpoint_path(out, resume)
    vae = (vae if vae is not None else load(cfg.vae)).to(cfg.device)
    train_x, valid_x = _data(cfg, vae, data)
    bernoulli = vae.likelihood.name == "bernoulli"
    valid_x = valid_x[: cfg.valid_size]
    valid_x = fixed_binarize(valid_x) if bernoulli else valid_x
    valid_mask = sample_masks(
        cfg.masks, len(valid_x), vae.data_shape, torch.Generator().manual_seed(10**6 + cfg.seed)
    )

    has_encoder = _has_encoder(vae, valid_x[:2])
    if cfg.objective == "forward" and not has_encoder:
        raise CondVAEError(
            "objective: 'forward' (O_for) draws z from the VAE's encoder q(z | x) and this VAE has "
            "none; use objective='reverse' (IPA-R), which needs only the decoder"
        )
    torch.manual_seed(cfg.seed)
    encoder = build_partial_encoder(vae, cfg.covariance, cfg.hidden).to(cfg.device)
    optim = torch.optim.Adam(encoder.parameters(), lr=cfg.lr)
    step, best, elapsed = 0, None, 0.0
    if resume:
        tensors, meta, loop = read_checkpoint(ckpt_path, cfg.identity())
        if loop.get("vae_fingerprint") != encoder.vae_fingerprint:
            raise CheckpointError(f"resume: checkpoint {str(ckpt_path)!r} was trained for another VAE")
        encoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")})
        restore_optimizer(optim, tensors, meta["param_groups"])
        step, best, elapsed = loop["step"], loop["best"], loop["elapsed"]
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())

    def save_checkpoint() -> None:
        tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
        loop = {
            "step": step,
            "best": best,
            "elapsed": elapsed + time.perf_counter() - started,
            "vae_fingerprint": encoder.vae_fingerprint,
        }
        write_checkpoint(ckpt_path, tensors, optim, cfg.identity(), loop)

    @torch.no_grad()
    def validate() -> dict[str, float]:
        encoder.eval()
        torch.manual_seed(cfg.seed + 7)
        scores = {"forward_kl": 0.0, "c_elbo": 0.0} if has_encoder else {"c_elbo": 0.0}
        for start in range(0, len(valid_x), 500):
            x = valid_x[start : start + 500].to(cfg.device)
            m = valid_mask[start : start + 500].to(cfg.device)
            if has_encoder:
                scores["forward_kl"] += float(encoder.forward_kl(vae, x, m).sum())
            scores["c_elbo"] -= float(encoder.reverse_loss(vae, x, m, samples=4).sum())
        encoder.train()
        return {k: v / len(valid_x) for k, v in scores.items()}

    n = len(train_x)
    per_epoch = n // cfg.batch_size
    started = time.perf_counter()
    encoder.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"partial encoder ({cfg.objective})")
    order, order_epoch = torch.empty(0, dtype=torch.long), -1
    with frozen(vae):
        while step < cfg.steps:
            epoch, i = divmod(step, per_epoch)
            if epoch != order_epoch:
                order = torch.randperm(
                    n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
                )
                order_epoch = epoch
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * step + 1)
            x = train_x[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
            if bernoulli:
                x = torch.bernoulli(x, generator=gen)
            mask = sample_masks(cfg.masks, len(x), vae.data_shape, gen)
            x, mask = x.to(cfg.device), mask.to(cfg.device)
            torch.manual_seed(cfg.seed * 1_000_003 + 7919 * step + 2)  # z ~ q or z ~ r this step
            loss = _loss(cfg, encoder, vae, x, mask).mean()
            adam_step(optim, loss, learning_rate(cfg, step, cfg.steps), step)
            step += 1
            bar.update(1)
            validated = step % cfg.valid_every == 0 or step == cfg.steps
            if validated:
                scores = validate()
                score = scores["forward_kl"] if cfg.objective == "forward" else -scores["c_elbo"]
                if best is None or score < best:
                    best = score
                    atomic_save_tensors(out / BEST, encoder.state_dict(), {"step": str(step)})
                bar.set_postfix(
                    loss=f"{float(loss.detach()):.2f}", **{k: f"{v:.2f}" for k, v in scores.items()}
                )
                record = {
                    "step": step,
                    "train_loss": float(loss.detach()),
                    "lr": learning_rate(cfg, step - 1, cfg.steps),
                    **scores,
                }
                with open(out / LOG, "a") as log:
                    log.write(json.dumps(record) + "\n")
            if validated or step % cfg.checkpoint_every == 0:
                save_checkpoint()
    bar.close()
    seconds = elapsed + time.perf_counter() - started
    if (out / BEST).exists():
        encoder.load_state_dict(read_tensors(out / BEST)[0])
    encoder.eval()
    encoder.card = {
        "name": f"partial encoder {cfg.objective} for {encoder.vae_name}",
        "objective": cfg.objective,
        "description": (
            f"{OBJECTIVES[cfg.objective]} partial encoder r(z | x_o, m) for the VAE {encoder.vae_name!r}."
        ),
        "training": {
            "vae": cfg.vae,
            "dataset": cfg.dataset or vae.card.get("dataset", "given tensors"),
            "masks": cfg.masks,
            "covariance": cfg.covariance,
            "steps": step,
            "batch_size": cfg.batch_size,
            "optimiser": f"Adam, lr {cfg.lr} cosine-decayed to {cfg.lr_min}",
            "seed": cfg.seed,
            "best_valid": None if best is None else round(best, 3),
            "training_seconds": round(seconds, 1),
            "torch": torch.__version__,
        },
    }
    save_partial_encoder(encoder, out / "encoder")
    return PartialTrainResult(encoder, step, best, seconds, out)
