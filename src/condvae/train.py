"""Training a VAE by maximising the ELBO (Kingma & Welling, "Auto-encoding variational Bayes", 2014).

    loss = -mean_x [ E_q(z|x) log p(x | z) - beta_t KL(q(z | x) || p(z)) ],
    beta_t = min(1, t / kl_warmup_steps)

(KL annealing: Bowman et al., "Generating sentences from a continuous space", 2016). Bernoulli
models see a fresh binarisation of every image each time (dynamic binarisation); validation,
every ``valid_every`` steps, uses a fixed one. The loop, its checkpoints and resuming to the
same weights after a kill are ``condvae.loop``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from condvae.data import fixed_binarize, load_dataset
from condvae.data.augment import augment
from condvae.errors import CondVAEError
from condvae.loop import LoopConfig, Outcome, Phase, Trainee, run
from condvae.models import VAE, build_model
from condvae.store import save_pretrained
from condvae.streams import seed_for


@dataclass
class TrainConfig(LoopConfig):
    """Everything that defines a VAE training run."""

    dataset: str
    model: dict[str, Any] = field(default_factory=lambda: {"architecture": "mlp"})
    image_size: list[int] | None = None
    epochs: int = 100
    max_steps: int | None = None
    kl_warmup_steps: int = 0
    augment: bool = False  # random flips and shifts of up to ``shift`` px (small sets)
    shift: int = 2
    valid_every: int | None = None  # steps; default once per epoch
    patience: int = 0  # validations without improvement before stopping; 0 = never

    positive: ClassVar[tuple[str, ...]] = (*LoopConfig.positive, "epochs", "max_steps", "valid_every")
    non_negative: ClassVar[tuple[str, ...]] = ("kl_warmup_steps", "shift", "patience")


@dataclass
class TrainResult:
    model: VAE
    steps: int
    best_valid_elbo: float | None
    seconds: float
    stopped_early: bool
    out: Path


@torch.no_grad()
def mean_elbo(model: VAE, x: torch.Tensor, batch_size: int = 1000, seed: int = 0) -> float:
    """Mean ELBO (nats per item) of ``x`` as given, one z sample per item, reproducible."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.random.fork_rng(devices=[] if model.device.type == "cpu" else [model.device]):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            total += float(model.elbo(x[start : start + batch_size].to(model.device)).sum())
    model.train(was_training)
    return total / max(x.shape[0], 1)


def _checked(x: Any, argument: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise CondVAEError(
            f"{argument}: expected a tensor [N, *data_shape], got {getattr(x, 'shape', type(x))}"
        )
    if not torch.isfinite(x).all():
        raise CondVAEError(f"{argument}: contains NaN or infinite values")
    return x.float()


def _data(
    cfg: TrainConfig, data: tuple[torch.Tensor, torch.Tensor | None] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_x, valid_x): the named dataset's splits or the tensors given, checked."""
    if data is None:
        size = tuple(cfg.image_size) if cfg.image_size else None
        train_x, valid_x = (
            load_dataset(cfg.dataset, s, cfg.data_dir, size=size).x for s in ("train", "valid")
        )  # type: ignore[arg-type]
    else:
        train_x = _checked(data[0], "data[0]")
        valid_x = _checked(data[1] if data[1] is not None else data[0][:0], "data[1]")
        if valid_x.shape[1:] != train_x.shape[1:]:
            raise CondVAEError(
                f"data[1]: validation items have shape {list(valid_x.shape[1:])}, "
                f"training items {list(train_x.shape[1:])}"
            )
    train_x = train_x[: cfg.limit_train] if cfg.limit_train else train_x
    if len(train_x) < cfg.batch_size:
        raise CondVAEError(f"batch_size: {cfg.batch_size} is larger than the {len(train_x)} training images")
    return train_x, valid_x


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    data: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> TrainResult:
    """Train the model described by ``cfg``; see the module docstring.

    The data is ``cfg.dataset`` (a named dataset, see ``condvae.data``) unless ``data`` gives
    ``(train_x, valid_x)`` tensors ``[N, *data_shape]`` directly (``valid_x`` may be None).
    """
    cfg.check()
    train_x, valid_x = _data(cfg, data)
    torch.manual_seed(seed_for(cfg.seed, "train/init"))
    model = build_model({**cfg.model, "data_shape": list(train_x.shape[1:])}).to(cfg.device)
    bernoulli = model.likelihood.name == "bernoulli"
    if not bernoulli:
        model.likelihood.check_support(train_x, "dataset")
    valid_x = fixed_binarize(valid_x) if bernoulli else valid_x
    per_epoch = len(train_x) // cfg.batch_size
    steps = min(cfg.epochs * per_epoch, cfg.max_steps or cfg.epochs * per_epoch)

    def step(phase: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = augment(train_x[batch], cfg.shift, gen) if cfg.augment else train_x[batch]
        x = torch.bernoulli(x, generator=gen) if bernoulli else x
        beta = min(1.0, (t + 1) / cfg.kl_warmup_steps) if cfg.kl_warmup_steps else 1.0
        return -model.elbo(x.to(cfg.device), beta=beta).mean()

    def validate() -> tuple[float, dict[str, float]]:
        score = mean_elbo(model, valid_x)
        return score, {"valid_elbo": score}

    def save(outcome: Outcome, training: dict[str, Any]) -> None:
        training = {
            "dataset": f"{cfg.dataset} (train split; best checkpoint on the valid split)",
            **training,
            "epochs": round(outcome.steps / per_epoch, 2),
            "kl_warmup_steps": cfg.kl_warmup_steps,
            "augmentation": f"flips and shifts of up to {cfg.shift} px" if cfg.augment else "none",
            "stopped_early": outcome.stopped,
            "best_valid_elbo": None if outcome.best is None else round(outcome.best, 3),
        }
        name = f"{cfg.dataset} {model.architecture} VAE (latent {model.latent_dim})"
        save_pretrained(
            model, Path(cfg.out) / "model", card={"name": name, "dataset": cfg.dataset, "training": training}
        )

    phases = [Phase(list(model.parameters()), steps)]
    trainee = Trainee(model, phases, len(train_x), step, save, validate if len(valid_x) else None)
    trainee.valid_every, trainee.patience = cfg.valid_every, cfg.patience
    done = run(cfg, trainee, resume, progress, desc=f"train {cfg.dataset}")
    return TrainResult(model, done.steps, done.best, done.seconds, done.stopped, Path(cfg.out))
