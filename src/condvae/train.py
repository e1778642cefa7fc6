"""Training a VAE by maximising the ELBO (Kingma & Welling, "Auto-encoding variational Bayes", 2014).

    loss = -mean_x [ E_q(z|x) log p(x | z) - beta_t KL(q(z | x) || p(z)) ],
    beta_t = min(1, t / kl_warmup_steps)

(KL annealing: Bowman et al., "Generating sentences from a continuous space", 2016). Bernoulli
models see a fresh binarisation of every image each time (dynamic binarisation); validation,
every ``valid_every`` steps, uses a fixed one. The loop, its checkpoints and resuming to the
same weights after a kill are ``condvae.loop``'s.

Tables (``train_vae``) are trained on the MIWAE bound (Mattei & Frellsen, "MIWAE: Deep generative
modelling and imputation of incomplete data sets", ICML 2019, arXiv:1812.02633), on the observed
entries x_o of each row only (m = the non-missing entries; m = 1 for a complete table, where it is
the importance-weighted bound of Burda, Grosse & Salakhutdinov, "Importance weighted
autoencoders", 2016):

    loss = -mean_x log (1/K) sum_k p(x_o | z_k) p(z_k) / q(z_k | x_o, m),  z_k ~ q(z | x_o, m),

and compared, after training, with independent per-column distributions fitted on the training
rows (a warning when the model is worse).
"""

from __future__ import annotations

import hashlib
import math
import sys
import tempfile
import types
import warnings
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from condvae.data import fixed_binarize, load_dataset
from condvae.data.augment import augment
from condvae.data.tables import Table, as_array, infer_columns, is_table_name, load_table
from condvae.errors import CondVAEError
from condvae.loop import LoopConfig, Outcome, Phase, Trainee, run
from condvae.models import VAE, TabularVAE, build_model
from condvae.models.tabular import check_columns
from condvae.store import save_pretrained
from condvae.streams import seed_for, seeded


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
class TableTrainConfig(LoopConfig):
    """Everything that defines a table VAE run (``train_vae``)."""

    dataset: str  # the table's name, csv:PATH, or "given data"
    latent_dim: int = 4
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    epochs: int = 500
    max_steps: int | None = None
    importance_samples: int = 10  # K of the MIWAE bound
    valid_every: int | None = None  # steps; default once per epoch
    patience: int = 20  # validations without improvement before stopping; 0 = never
    valid_fraction: float = 0.15  # rows carved out for validation when none are given
    _: KW_ONLY
    batch_size: int = 64

    positive: ClassVar[tuple[str, ...]] = (
        *LoopConfig.positive,
        "latent_dim",
        "epochs",
        "max_steps",
        "importance_samples",
        "valid_every",
    )
    non_negative: ClassVar[tuple[str, ...]] = ("patience",)

    def check(self) -> None:
        super().check()
        if not 0 <= self.valid_fraction < 1:
            raise CondVAEError(f"valid_fraction: expected a fraction in [0, 1), got {self.valid_fraction!r}")


@dataclass
class TrainResult:
    model: VAE
    steps: int
    best_valid_elbo: float | None  # tables: the best validation MIWAE bound per row
    seconds: float
    stopped_early: bool
    out: Path | None  # None: trained in a temporary folder (``train_vae(out=None)``), since removed
    scores: dict[str, float] = field(default_factory=dict)  # tables: model and baseline, nats per row
    warning: str | None = None  # tables: set when the model scores worse than the baseline


@torch.no_grad()
def _mean_score(model: VAE, x: torch.Tensor, score: Any, batch_size: int, seed: int) -> float:
    """Mean of ``score(batch)`` per item over ``x`` in eval mode, under a fixed seed."""
    was_training = model.training
    model.eval()
    total = 0.0
    with seeded(seed, model.device):
        for start in range(0, x.shape[0], batch_size):
            total += float(score(x[start : start + batch_size].to(model.device)).sum())
    model.train(was_training)
    return total / max(x.shape[0], 1)


def mean_elbo(model: VAE, x: torch.Tensor, batch_size: int = 1000, seed: int = 0) -> float:
    """Mean ELBO (nats per item) of ``x`` as given, one z sample per item, reproducible."""
    return _mean_score(model, x, model.elbo, batch_size, seed)


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
    if data is None and is_table_name(cfg.dataset):
        return _train_table_config(cfg, resume, progress)
    train_x, valid_x = _data(cfg, data)
    torch.manual_seed(seed_for(cfg.seed, "train/init"))
    model = build_model({**cfg.model, "data_shape": list(train_x.shape[1:])}).to(cfg.device)
    bernoulli = model.likelihood.name == "bernoulli"
    if bernoulli:  # before any work, instead of torch.bernoulli's error mid-run
        _check_unit_interval(train_x, "likelihood")
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


def _check_unit_interval(x: torch.Tensor, argument: str) -> None:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise CondVAEError(
            f"{argument}: 'bernoulli' needs values in [0, 1] (binary, or grey levels it binarises), "
            f"got [{lo:g}, {hi:g}]; use likelihood 'gaussian' (tables: the default per-column likelihoods)"
        )


# -- tables ----------------------------------------------------------------------------------


@torch.no_grad()
def baseline_log_likelihood(
    columns: list[dict[str, Any]], train_x: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """log p(x_o) per row, ``[N]``, of independent per-column distributions fitted on ``train_x``.

    Both in model space (``TabularVAE.to_model``), NaN = missing: a Gaussian per gaussian column
    (the observed mean and standard deviation), a Bernoulli per bernoulli column and a
    categorical per categorical column, each with add-one (Laplace) smoothing so that a value
    unseen in training keeps some mass. Only the observed entries of each row are scored: the
    trivial baseline a model of the table must beat.
    """
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for j, spec in enumerate(columns):
        seen = train_x[:, j][~torch.isnan(train_x[:, j])].double()
        col = x[:, j].double()
        observed = ~torch.isnan(col)
        value = torch.where(observed, col, torch.zeros_like(col))
        if spec["kind"] == "gaussian":
            mean, std = seen.mean(), seen.std(unbiased=False).clamp_min(1e-3)
            lp = -0.5 * ((value - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)
        else:
            k = 2 if spec["kind"] == "bernoulli" else len(spec["values"])
            counts = torch.bincount(seen.round().long().clamp(0, k - 1), minlength=k).double() + 1
            lp = (counts / counts.sum()).log()[value.round().long().clamp(0, k - 1)]
        total += torch.where(observed, lp, torch.zeros_like(lp))
    return total


def mean_iwae(model: TabularVAE, x: torch.Tensor, k: int, seed: int = 0, batch_size: int = 500) -> float:
    """Mean MIWAE bound (nats per row) of ``x`` (model space, NaN = missing), reproducible."""
    return _mean_score(model, x, lambda rows: model.iwae(rows, k), batch_size, seed)


def _table_inputs(
    data: Any, valid: Any, seed: int, valid_fraction: float, with_target: bool
) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(train rows, validation rows, column names, a label) from what ``train_vae`` was given."""
    if isinstance(data, str):
        table = load_table(data, "train", with_target=with_target)
        if valid is None:
            valid = load_table(data, "valid", with_target=with_target)
        label = data
        data = table
    else:
        label = f"{data.name} ({data.split} split)" if isinstance(data, Table) else "given data"
    x, names = as_array(data, argument="data")
    if valid is not None:
        valid_x, valid_names = as_array(valid, argument="valid")
        if valid_x.shape[1] != x.shape[1]:
            raise CondVAEError(f"valid: {valid_x.shape[1]} columns, data has {x.shape[1]}")
        if valid_names != names:
            raise CondVAEError(f"valid: columns {valid_names[:4]}... differ from data's {names[:4]}...")
        return x, valid_x, names, label
    # a seeded carve-out: the validation rows for early stopping and the baseline comparison
    n_valid = round(valid_fraction * len(x)) if len(x) >= 10 else 0
    perm = np.random.default_rng(seed).permutation(len(x))
    return x[np.sort(perm[n_valid:])], x[np.sort(perm[:n_valid])], names, label


def _table_columns(
    columns: Any, likelihood: str | None, x: np.ndarray, names: list[str]
) -> list[dict[str, Any]]:
    """The column specs: given, or inferred from the rows, shaped by ``likelihood``."""
    if columns is not None and all(isinstance(c, str) for c in columns):
        if len(columns) != x.shape[1]:
            raise CondVAEError(f"columns: {len(columns)} names for {x.shape[1]} columns")
        names, columns = [str(c) for c in columns], None
    if columns is None:
        specs = infer_columns(x, names)
    else:
        specs = check_columns(columns)
        if len(specs) != x.shape[1]:
            raise CondVAEError(f"columns: {len(specs)} column specs for data with {x.shape[1]} columns")
    if likelihood in (None, "tabular"):
        return specs
    if likelihood == "bernoulli":
        bad = [s["name"] for s in specs if s["kind"] != "bernoulli" or s["values"] != [0.0, 1.0]]
        if bad:
            raise CondVAEError(
                f"likelihood: 'bernoulli' needs 0/1 columns, and {', '.join(map(repr, bad[:3]))}"
                f"{' ...' if len(bad) > 3 else ''} are not; leave likelihood=None for per-column likelihoods"
            )
        return specs
    if likelihood == "gaussian":  # every column standardised and Gaussian
        out = []
        for s, j in zip(specs, range(x.shape[1]), strict=True):
            col = x[:, j][~np.isnan(x[:, j])]
            out.append(
                {"name": s["name"], "kind": "gaussian", "loc": float(col.mean()), "scale": float(col.std())}
            )
        return out
    raise CondVAEError(
        f"likelihood: expected None (per-column), 'gaussian' or 'bernoulli' for a table, got {likelihood!r}"
    )


def train_vae(
    data: Any,
    *,
    valid: Any = None,
    columns: list[dict[str, Any]] | list[str] | None = None,
    latent_dim: int = 4,
    hidden: list[int] | tuple[int, ...] = (64, 64),
    epochs: int = 500,
    batch_size: int = 64,
    lr: float = 1e-3,
    importance_samples: int = 10,
    patience: int = 20,
    likelihood: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    resume: bool = False,
    **more: Any,
) -> TrainResult:
    """Train a VAE on a table (or on images) and return it with its scores.

    ``data`` is a bundled table's name (``"breast_cancer"``, ``"diabetes"``, ``"wine"``: its
    train split, validated on its valid split), ``"csv:PATH"``, a :class:`Table`, or a numpy
    array, pandas DataFrame, torch tensor or nested lists ``[N, D]`` in raw units with NaN for
    missing values. A table gets a :class:`TabularVAE` with per-column likelihoods (``columns``:
    the specs of ``infer_columns``, or column names; default: inferred from the rows) trained on
    the MIWAE bound with ``importance_samples`` = K (see the module docstring). Image tensors
    ``[N, C, H, W]`` (or an image dataset's name) train an ``MLPVAE`` through :func:`train`.

    Without ``valid``, a seeded ``valid_fraction`` (default 0.15) of the rows is held out for
    early stopping (``patience`` validations without improvement; 0 = never) and the score.
    After training, the validation MIWAE bound per row (K = 100) is compared with independent
    per-column distributions fitted on the training rows (``baseline_log_likelihood``), on the
    same observed entries; a model that is worse gets a ``UserWarning`` and a note in its card.
    ``out=None`` trains in a temporary folder (removed afterwards; the model stays in memory).
    ``likelihood``: None (per-column), ``"gaussian"`` (every column Gaussian) or ``"bernoulli"``
    (refused unless every column is 0/1). ``batch_size`` is capped at the number of training
    rows. ``more``: ``activation``, ``lr_min``, ``max_steps``, ``valid_every``,
    ``valid_fraction``, ``checkpoint_every``, ``with_target`` (a bundled table's target as a
    last column) and, for images, the fields of :class:`TrainConfig`.

    Returns a :class:`TrainResult`; ``result.model.to_model`` / ``from_model`` map raw units to
    the model's space and back.
    """
    if out is None and resume:
        raise CondVAEError("resume: needs the out folder of the run to continue")
    if out is None:
        with tempfile.TemporaryDirectory(prefix="condvae-train-") as tmp:
            result = train_vae(
                data, valid=valid, columns=columns, latent_dim=latent_dim, hidden=hidden, epochs=epochs,
                batch_size=batch_size, lr=lr, importance_samples=importance_samples, patience=patience,
                likelihood=likelihood, out=tmp, seed=seed, device=device, progress=progress, **more,
            )  # fmt: skip
        result.out = None
        return result
    common = {"out": str(out), "lr": lr, "seed": seed, "device": device, "batch_size": batch_size}
    if (isinstance(data, str) and not is_table_name(data)) or (
        isinstance(data, torch.Tensor) and data.dim() > 2
    ):
        return _train_images(
            data, valid, latent_dim, hidden, epochs, patience, likelihood, common, resume, progress, more
        )
    with_target = bool(more.pop("with_target", False))
    allowed = {f for f in TableTrainConfig.__dataclass_fields__} - {
        "dataset",
        *common,
        "latent_dim",
        "hidden",
    }
    unknown = sorted(set(more) - allowed)
    if unknown:
        raise CondVAEError(
            f"{unknown[0]}: not a setting of train_vae for tables; expected one of {sorted(allowed)}"
        )
    valid_fraction = float(more.get("valid_fraction", 0.15))
    x, valid_x, names, label = _table_inputs(data, valid, seed, valid_fraction, with_target)
    specs = _table_columns(columns, likelihood, np.concatenate([x, valid_x]), names)
    cfg = TableTrainConfig(
        dataset=label,
        latent_dim=latent_dim,
        hidden=[int(h) for h in hidden],
        epochs=epochs,
        importance_samples=importance_samples,
        patience=patience,
        **{**common, "batch_size": min(batch_size, max(len(x), 1))},
        **more,
    )
    cfg.check()
    torch.manual_seed(seed_for(cfg.seed, "train/init"))
    model = TabularVAE(specs, cfg.latent_dim, cfg.hidden, cfg.activation).to(cfg.device)
    train_x, held_x = model.to_model(x, "data"), model.to_model(valid_x, "valid")
    digest = hashlib.sha256(np.ascontiguousarray(np.concatenate([x, valid_x])).tobytes()).hexdigest()[:16]
    return _train_table(cfg, model, train_x, held_x, digest, resume, progress)


def _train_table(
    cfg: TableTrainConfig,
    model: TabularVAE,
    train_x: torch.Tensor,
    valid_x: torch.Tensor,
    digest: str,
    resume: bool,
    progress: bool,
) -> TrainResult:
    """The MIWAE run of ``train_vae`` through ``condvae.loop``; the card holds the comparison."""
    k = cfg.importance_samples
    per_epoch = max(len(train_x) // cfg.batch_size, 1)
    steps = min(cfg.epochs * per_epoch, cfg.max_steps or cfg.epochs * per_epoch)
    found: dict[str, Any] = {}

    def step(phase: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = train_x[batch]
        return -model.iwae(x, k, ~torch.isnan(x)).mean()

    def validate() -> tuple[float, dict[str, float]]:
        score = mean_iwae(model, valid_x, k, seed=seed_for(cfg.seed, "valid/noise"))
        return score, {"valid_miwae": score}

    def save(outcome: Outcome, training: dict[str, Any]) -> None:
        part, rows = ("validation", valid_x) if len(valid_x) else ("training", train_x)
        score = mean_iwae(model, rows, 100, seed=seed_for(cfg.seed, "score/noise"))
        base = float(baseline_log_likelihood(model.columns, train_x.cpu(), rows.cpu()).mean())
        found["scores"] = {"model": round(score, 3), "baseline": round(base, 3)}
        if score < base:
            found["warning"] = (
                f"the trained model scores {score:.2f} nats per row on the {part} rows, worse than "
                f"independent per-column distributions ({base:.2f}); it overfits or is undertrained: "
                "try a smaller hidden/latent_dim, patience, or more rows"
            )
        missing = float(torch.isnan(train_x).float().mean())
        training = {
            "dataset": f"{cfg.dataset}, {len(train_x)} training rows, {len(valid_x)} validation rows",
            **training,
            "objective": f"MIWAE bound, K = {k}"
            + (f", {missing:.1%} of the entries missing" if missing else ""),
            "epochs": round(outcome.steps / per_epoch, 2),
            "stopped_early": outcome.stopped,
            "best_valid_miwae": None if outcome.best is None else round(outcome.best, 3),
            f"{part}_miwae_k100_per_row": round(score, 3),
            f"{part}_baseline_per_row": round(base, 3),
            **({"warning": found["warning"]} if "warning" in found else {}),
        }
        model.card = {
            "name": f"{cfg.dataset} tabular VAE (latent {model.latent_dim})",
            "dataset": cfg.dataset.split(" ")[0],
            "training": training,
        }
        save_pretrained(model, Path(cfg.out) / "model", card=model.card)

    phases = [Phase(list(model.parameters()), steps)]
    trainee = Trainee(model, phases, len(train_x), step, save, validate if len(valid_x) else None)
    trainee.valid_every, trainee.patience = cfg.valid_every or per_epoch, cfg.patience
    trainee.identity = {"data": digest, "columns": model.columns}
    done = run(cfg, trainee, resume, progress, desc=f"train {cfg.dataset}")
    if "warning" in found:
        warnings.warn(f"train_vae: {found['warning']}", UserWarning, stacklevel=3)
    return TrainResult(
        model,
        done.steps,
        done.best,
        done.seconds,
        done.stopped,
        Path(cfg.out),
        found.get("scores", {}),  # scored by the rank that saves (rank 0 under torchrun)
        found.get("warning"),
    )


def _train_images(
    data: Any,
    valid: Any,
    latent_dim: int,
    hidden: Any,
    epochs: int,
    patience: int,
    likelihood: str | None,
    common: dict[str, Any],
    resume: bool,
    progress: bool,
    more: dict[str, Any],
) -> TrainResult:
    """``train_vae`` on images: an MLPVAE through :func:`train` (a dataset name or tensors)."""
    model: dict[str, Any] = {
        "architecture": more.pop("arch", "mlp"),
        "latent_dim": latent_dim,
        "hidden": list(hidden),
    }
    if isinstance(data, str):
        model["likelihood"] = likelihood or "bernoulli"
        cfg = TrainConfig(dataset=data, model=model, epochs=epochs, patience=patience, **common, **more)
        return train(cfg, resume, progress)
    x = _checked(data, "data")
    if valid is None:  # the seeded carve-out, as for tables
        n_valid = round(0.15 * len(x)) if len(x) >= 10 else 0
        perm = torch.from_numpy(np.random.default_rng(common["seed"]).permutation(len(x)))
        x, valid = x[perm[n_valid:].sort().values], x[perm[:n_valid].sort().values]
    unit = float(x.min()) >= 0 and float(x.max()) <= 1
    model["likelihood"] = likelihood or ("bernoulli" if unit else "gaussian")
    cfg = TrainConfig(
        dataset="given tensors", model=model, epochs=epochs, patience=patience, **common, **more
    )
    return train(cfg, resume, progress, data=(x, valid))


def _train_table_config(cfg: TrainConfig, resume: bool, progress: bool) -> TrainResult:
    """``train(cfg)`` (and ``condvae train --dataset breast_cancer``) for a table's name."""
    model = dict(cfg.model)
    if model.get("architecture", "mlp") not in ("mlp", "tabular"):
        raise CondVAEError(f"arch: a table trains the 'tabular' architecture, got {model['architecture']!r}")
    extra = {"activation": model["activation"]} if model.get("activation") else {}
    if cfg.micro_batches is not None:
        extra["micro_batches"] = cfg.micro_batches
    return train_vae(
        cfg.dataset,
        latent_dim=model.get("latent_dim", 4),
        hidden=model.get("hidden") or (64, 64),
        likelihood=model.get("likelihood"),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        patience=cfg.patience,
        out=cfg.out,
        seed=cfg.seed,
        device=cfg.device,
        progress=progress,
        resume=resume,
        lr_min=cfg.lr_min,
        max_steps=cfg.max_steps,
        valid_every=cfg.valid_every,
        checkpoint_every=cfg.checkpoint_every,
        **extra,
    )


class _CallableModule(types.ModuleType):
    """``condvae.train`` is this module (``import condvae.train`` makes it so); calling it is
    ``train_vae(...)``, or ``train(cfg, ...)`` for a :class:`TrainConfig`, instead of Python's
    "'module' object is not callable"."""

    def __call__(self, data: Any, *args: Any, **kwargs: Any) -> TrainResult:
        if isinstance(data, TrainConfig):
            return train(data, *args, **kwargs)
        return train_vae(data, *args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
