"""Training a partial encoder over random masks with the VAE frozen (Harvey, Naderiparizi &
Wood, "Conditional Image Generation by Conditioning Variational Auto-Encoders", 2022).

    O_for (IPA):    min_psi  E_x E_m E_q(z|x) [ -log r_psi(z | x * m, m) ]
                    = E_x E_m KL(q(z | x) || r_psi(z | x_o, m)) + const    (mass-covering)
    O_rev (IPA-R):  max_psi  E_x E_m E_r [ log p(x_o | z) + log p(z) - log r_psi(z | x_o, m) ]
                    (the amortised C-ELBO; mode-seeking)

x runs over the training split (dynamically binarised for Bernoulli VAEs), m over a mask
family (``mixture`` by default). Only psi is trained, by ``condvae.loop`` (resumable).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from condvae.conditioning.variational import frozen
from condvae.data import fixed_binarize, load_dataset
from condvae.data.tables import load_table
from condvae.errors import CondVAEError
from condvae.loop import LoopConfig, Outcome, Phase, Trainee, run
from condvae.masks import sample_masks
from condvae.models import VAE, TabularVAE
from condvae.partial.encoder import COVARIANCES, PartialEncoder, build_partial_encoder
from condvae.partial.pretrained import save_partial_encoder
from condvae.store import from_pretrained
from condvae.streams import generator, seed_for

OBJECTIVES = {"forward": "O_for (IPA)", "reverse": "O_rev (IPA-R)"}


@dataclass
class PartialTrainConfig(LoopConfig):
    """Everything that defines a partial-encoder run."""

    vae: str  # a bundled model's name or a pretrained directory
    objective: str = "forward"
    dataset: str | None = None  # default: the dataset in the VAE's card
    masks: str = "mixture"
    covariance: str = "diagonal"
    hidden: list[int] | None = None
    steps: int = 20000
    samples: int = 1  # O_rev: draws of z per item
    valid_every: int = 1000
    valid_size: int = 1000
    _: KW_ONLY
    lr_min: float = 1e-5
    checkpoint_every: int = 500

    positive: ClassVar[tuple[str, ...]] = (
        *LoopConfig.positive,
        "steps",
        "samples",
        "valid_every",
        "valid_size",
    )

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise CondVAEError(f"objective: expected one of {sorted(OBJECTIVES)}, got {self.objective!r}")
        if self.covariance not in COVARIANCES:
            raise CondVAEError(f"covariance: expected one of {COVARIANCES}, got {self.covariance!r}")
        super().check()


@dataclass
class PartialTrainResult:
    encoder: PartialEncoder
    steps: int
    best_valid: float | None
    seconds: float
    out: Path


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
        if isinstance(vae, TabularVAE):  # a table's splits, mapped to the model's space
            train_x, valid_x = (vae.to_model(load_table(dataset, s).x, "dataset") for s in ("train", "valid"))
        else:
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
    cfg.check()
    vae = (vae if vae is not None else from_pretrained(cfg.vae)).to(cfg.device)
    train_x, valid_x = _data(cfg, vae, data)
    bernoulli = vae.likelihood.name == "bernoulli"
    valid_x = valid_x[: cfg.valid_size]
    valid_x = fixed_binarize(valid_x) if bernoulli else valid_x
    valid_mask = sample_masks(
        cfg.masks, len(valid_x), vae.data_shape, generator(cfg.seed, "valid/masks"), device=valid_x.device
    )
    valid_mask &= ~torch.isnan(valid_x)  # a table's missing entries are never evidence
    has_encoder = _has_encoder(vae, valid_x[:2])
    if cfg.objective == "forward" and not has_encoder:
        raise CondVAEError(
            "objective: 'forward' (O_for) draws z from the VAE's encoder q(z | x) and this VAE has "
            "none; use objective='reverse' (IPA-R), which needs only the decoder"
        )
    torch.manual_seed(seed_for(cfg.seed, "train/init"))
    encoder = build_partial_encoder(vae, cfg.covariance, cfg.hidden).to(cfg.device)

    def step(phase: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = torch.bernoulli(train_x[batch], generator=gen) if bernoulli else train_x[batch]
        mask = sample_masks(cfg.masks, len(x), vae.data_shape, gen, device=x.device) & ~torch.isnan(x)
        x, mask = x.to(cfg.device), mask.to(cfg.device)
        if cfg.objective == "forward":
            return encoder.forward_kl(vae, x, mask).mean()
        return encoder.reverse_loss(vae, x, mask, cfg.samples).mean()

    @torch.no_grad()
    def validate() -> tuple[float, dict[str, float]]:
        encoder.eval()
        torch.manual_seed(seed_for(cfg.seed, "valid/noise"))
        scores = {"forward_kl": 0.0, "c_elbo": 0.0} if has_encoder else {"c_elbo": 0.0}
        for start in range(0, len(valid_x), 500):
            x, m = valid_x[start : start + 500].to(cfg.device), valid_mask[start : start + 500].to(cfg.device)
            if has_encoder:
                scores["forward_kl"] += float(encoder.forward_kl(vae, x, m).sum())
            scores["c_elbo"] -= float(encoder.reverse_loss(vae, x, m, samples=4).sum())
        encoder.train()
        scores = {k: v / len(valid_x) for k, v in scores.items()}
        return (-scores["forward_kl"] if cfg.objective == "forward" else scores["c_elbo"]), scores

    def save(outcome: Outcome, training: dict[str, Any]) -> None:
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
                **training,
                "best_valid": None if outcome.best is None else round(-outcome.best, 3),
            },
        }
        save_partial_encoder(encoder, Path(cfg.out) / "encoder")

    phases = [Phase(list(encoder.parameters()), cfg.steps)]
    trainee = Trainee(encoder, phases, len(train_x), step, save, validate, cfg.valid_every)
    trainee.identity = {"vae_fingerprint": encoder.vae_fingerprint}
    with frozen(vae):
        done = run(cfg, trainee, resume, progress, desc=f"partial encoder ({cfg.objective})")
    best = None if done.best is None else -done.best
    return PartialTrainResult(encoder, done.steps, best, done.seconds, Path(cfg.out))
