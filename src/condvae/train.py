"""Training a VAE by maximising the ELBO (Kingma & Welling 2014), resumable after a kill.

    loss = -mean_x [ E_q(z|x) log p(x | z) - beta_t KL(q(z | x) || p(z)) ],
    beta_t = min(1, t / kl_warmup_steps)      (KL annealing, Bowman et al. 2016)

Adam with a cosine learning-rate decay from ``lr`` to ``lr_min``. Bernoulli models see a fresh
binarisation of every image each time (dynamic binarisation); validation uses a fixed one.

Reproducibility: the data order of epoch e is a permutation seeded by (seed, e), and every
``checkpoint_every`` steps (and after each validation) the whole loop state is written
atomically: weights, Adam moments, the step, the RNG state, the best validation score and the
early-stopping counter. ``resume=True`` continues from it and ends with the same weights as an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from condvae.checkpoint import (
    atomic_save_tensors,
    atomic_write_bytes,
    read_tensors,
    save_pretrained,
)
from condvae.data import ImageData, fixed_binarize, load_dataset
from condvae.data.augment import augment
from condvae.errors import CheckpointError, CondVAEError
from condvae.models import VAE, build_model

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"
TRAIN_CONFIG = "train_config.json"
LOG = "log.jsonl"


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``out/train_config.json``)."""

    dataset: str
    out: str
    model: dict[str, Any] = field(default_factory=lambda: {"architecture": "mlp"})
    data_dir: str | None = None
    image_size: list[int] | None = None
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    lr_min: float = 1e-4
    kl_warmup_steps: int = 0
    augment: bool = False  # random flips and shifts of up to ``shift`` px (small sets)
    shift: int = 2
    seed: int = 0
    checkpoint_every: int = 1000
    valid_every: int | None = None  # steps; default once per epoch
    patience: int = 0  # validations without improvement before stopping; 0 = never
    limit_train: int | None = None
    device: str = "cpu"

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run that wrote the checkpoint."""
        keep = {
            "dataset",
            "model",
            "image_size",
            "epochs",
            "max_steps",
            "batch_size",
            "lr",
            "lr_min",
            "kl_warmup_steps",
            "augment",
            "shift",
            "seed",
            "valid_every",
            "patience",
            "limit_train",
        }
        return {k: v for k, v in dataclasses.asdict(self).items() if k in keep}


@dataclass
class TrainResult:
    model: VAE
    steps: int
    best_valid_elbo: float | None
    seconds: float
    stopped_early: bool
    out: Path


def _validate_config(cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise CondVAEError(f"{name}: expected a positive integer, got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise CondVAEError(f"lr: expected a positive learning rate, got {cfg.lr}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise CondVAEError(f"max_steps: expected a positive integer, got {cfg.max_steps}")


def _prepare(x: torch.Tensor, model: VAE) -> torch.Tensor:
    """Evaluation view of the data: a fixed binarisation for Bernoulli models."""
    return fixed_binarize(x) if model.likelihood.name == "bernoulli" else x


def optimizer_tensors(optim: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = optim.state_dict()
    tensors = {
        f"optim.{idx}.{key}": value
        for idx, entry in state["state"].items()
        for key, value in entry.items()
        if isinstance(value, torch.Tensor)
    }
    return tensors, json.dumps(state["param_groups"])


def restore_optimizer(optim: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    optim.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def checkpoint_path(out: Path, resume: bool) -> Path:
    """``out/checkpoint.safetensors``, refusing to overwrite a run or to resume nothing."""
    path = out / CHECKPOINT
    if path.exists() and not resume:
        raise CondVAEError(
            f"out: {str(out)!r} already holds a training checkpoint; pass resume=True (--resume) "
            "to continue it or choose another output folder"
        )
    if resume and not path.exists():
        raise CondVAEError(f"resume: no checkpoint to resume in {str(out)!r}")
    return path


def read_checkpoint(
    path: Path, identity: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """Tensors, metadata and loop counters of a run's checkpoint written with ``identity``."""
    tensors, meta = read_tensors(path)
    try:
        saved = json.loads(meta["train_config"])
        loop = json.loads(meta["loop"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint: {str(path)!r} is not a condvae training checkpoint") from None
    if saved != identity:
        diff = sorted(k for k in saved if saved[k] != identity.get(k))
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} was written with different settings ({diff})"
        )
    return tensors, meta, loop


def write_checkpoint(
    path: Path,
    tensors: dict[str, torch.Tensor],
    optim: torch.optim.Optimizer,
    identity: dict[str, Any],
    loop: dict[str, Any],
) -> None:
    """A run's checkpoint, atomically: ``tensors`` plus the Adam state, with the run's settings
    (``identity``) and counters (``loop``) in the header, as :func:`read_checkpoint` reads it."""
    opt_tensors, groups = optimizer_tensors(optim)
    meta = {"train_config": json.dumps(identity), "loop": json.dumps(loop), "param_groups": groups}
    atomic_save_tensors(path, {**tensors, **opt_tensors}, meta)


def run_identity(cfg: Any) -> dict[str, Any]:
    """A run config's fields minus where it writes and how often: what a resume must share."""
    skip = {"out", "data_dir", "checkpoint_every", "device"}
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}


def learning_rate(cfg: Any, step: int, total: int) -> float:
    """Cosine decay from ``cfg.lr`` to ``cfg.lr_min`` over the run (a pure function of the step)."""
    progress = min(step / max(total, 1), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * progress))


def adam_step(optim: torch.optim.Optimizer, loss: torch.Tensor, lr: float, step: int) -> None:
    """One update at learning rate ``lr``; a non-finite loss stops the run with a clear error."""
    if not torch.isfinite(loss):
        raise CondVAEError(f"lr: training diverged (loss {float(loss)}) at step {step}; lower lr")
    for group in optim.param_groups:
        group["lr"] = lr
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()


@torch.no_grad()
def mean_elbo(model: VAE, x: torch.Tensor, batch_size: int = 1000, seed: int = 0) -> float:
    """Mean ELBO (nats per item) of ``x`` as given, one z sample per item, reproducible."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.random.fork_rng(devices=[] if model.device.type == "cpu" else [model.device]):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(model.device)
            total += float(model.elbo(batch).sum())
    model.train(was_training)
    return total / max(x.shape[0], 1)


def _tensor_data(x: torch.Tensor, name: str, split: str, argument: str) -> ImageData:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise CondVAEError(
            f"{argument}: expected a tensor [N, *data_shape], got {getattr(x, 'shape', type(x))}"
        )
    if not torch.isfinite(x).all():
        raise CondVAEError(f"{argument}: contains NaN or infinite values")
    return ImageData(x=x.float(), labels=None, name=name, split=split)


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
    _validate_config(cfg)
    out = Path(cfg.out)
    ckpt_path = checkpoint_path(out, resume)
    size = tuple(cfg.image_size) if cfg.image_size else None
    if data is not None:
        train_data = _tensor_data(data[0], cfg.dataset, "train", "data[0]")
        valid_x = data[1] if data[1] is not None else data[0][:0]
        valid_data = _tensor_data(valid_x, cfg.dataset, "valid", "data[1]")
        if valid_data.data_shape != train_data.data_shape:
            raise CondVAEError(
                f"data[1]: validation items have shape {list(valid_data.data_shape)}, "
                f"training items {list(train_data.data_shape)}"
            )
    else:
        train_data = load_dataset(cfg.dataset, "train", cfg.data_dir, size=size)  # type: ignore[arg-type]
        valid_data = load_dataset(cfg.dataset, "valid", cfg.data_dir, size=size)  # type: ignore[arg-type]
    if cfg.limit_train:
        train_data = ImageData(train_data.x[: cfg.limit_train], None, train_data.name, "train")
    n = len(train_data)
    if n < cfg.batch_size:
        raise CondVAEError(f"batch_size: {cfg.batch_size} is larger than the {n} training images")

    torch.manual_seed(cfg.seed)
    model_cfg = {**cfg.model, "data_shape": list(train_data.data_shape)}
    model = build_model(model_cfg).to(cfg.device)
    if model.likelihood.name != "bernoulli":
        model.likelihood.check_support(train_data.x, "dataset")
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = n // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    valid_every = cfg.valid_every or steps_per_epoch
    valid_x = _prepare(valid_data.x, model) if len(valid_data) else None

    step, best, bad, elapsed, stopped = 0, None, 0, 0.0, False
    if resume:
        tensors, meta, loop = read_checkpoint(ckpt_path, cfg.identity())
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(optim, tensors, meta["param_groups"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device=cfg.device)
        step, best, bad, elapsed = loop["step"], loop["best"], loop["bad"], loop["elapsed"]
        stopped = loop["stopped"]
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / TRAIN_CONFIG, json.dumps(dataclasses.asdict(cfg), indent=2).encode())

    def save_checkpoint() -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.device(cfg.device).type == "cuda":  # dynamic binarisation draws on the GPU
            tensors["rng.cuda"] = torch.cuda.get_rng_state(cfg.device)
        loop = {
            "step": step,
            "best": best,
            "bad": bad,
            "stopped": stopped,
            "elapsed": elapsed + time.perf_counter() - started,
        }
        write_checkpoint(ckpt_path, tensors, optim, cfg.identity(), loop)

    started = time.perf_counter()
    model.train()
    bar = tqdm(total=total, initial=step, disable=not progress, desc=f"train {cfg.dataset}")
    order = torch.empty(0, dtype=torch.long)
    order_epoch = -1
    while step < total and not stopped:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order, order_epoch = torch.randperm(n, generator=gen), epoch
        x = train_data.x[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
        if cfg.augment:
            x = augment(x, cfg.shift, torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * step + 1))
        x = x.to(cfg.device)
        if model.likelihood.name == "bernoulli":
            x = torch.bernoulli(x)
        beta = min(1.0, (step + 1) / cfg.kl_warmup_steps) if cfg.kl_warmup_steps else 1.0
        loss = -model.elbo(x, beta=beta).mean()
        adam_step(optim, loss, learning_rate(cfg, step, total), step)
        step += 1
        bar.update(1)
        validated = False
        if valid_x is not None and (step % valid_every == 0 or step == total):
            score = mean_elbo(model, valid_x)
            validated = True
            if best is None or score > best:
                best, bad = score, 0
                atomic_save_tensors(out / BEST, model.state_dict(), {"step": str(step)})
            else:
                bad += 1
                stopped = bool(cfg.patience and bad >= cfg.patience)
            bar.set_postfix(loss=f"{float(loss.detach()):.2f}", valid_elbo=f"{score:.2f}")
            record = {
                "step": step,
                "epoch": step / steps_per_epoch,
                "train_loss": float(loss.detach()),
                "valid_elbo": score,
                "lr": learning_rate(cfg, step - 1, total),
            }
            with open(out / LOG, "a") as log:
                log.write(json.dumps(record) + "\n")
        if validated or step % cfg.checkpoint_every == 0 or step == total:
            save_checkpoint()
    bar.close()
    seconds = elapsed + time.perf_counter() - started
    if (out / BEST).exists():
        tensors, _ = read_tensors(out / BEST)
        model.load_state_dict(tensors)
    model.eval()
    card = {
        "name": f"{cfg.dataset} {model.architecture} VAE (latent {model.latent_dim})",
        "dataset": cfg.dataset,
        "training": {
            "dataset": f"{cfg.dataset} (train split; best checkpoint on the valid split)",
            "steps": step,
            "epochs": round(step / steps_per_epoch, 2),
            "batch_size": cfg.batch_size,
            "optimiser": f"Adam, lr {cfg.lr} cosine-decayed to {cfg.lr_min}",
            "kl_warmup_steps": cfg.kl_warmup_steps,
            "augmentation": f"flips and shifts of up to {cfg.shift} px" if cfg.augment else "none",
            "seed": cfg.seed,
            "stopped_early": stopped,
            "best_valid_elbo": None if best is None else round(best, 3),
            "training_seconds": round(seconds, 1),
            "device": cfg.device,
            "torch": torch.__version__,
        },
    }
    save_pretrained(model, out / "model", card=card)
    return TrainResult(model, step, best, seconds, stopped, out)
