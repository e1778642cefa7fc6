"""The one resumable training loop; every condvae trainer drives it with its own step function.

A run is a list of phases (one for a VAE, a partial encoder or a classifier; one per level for
a greedy pyramid), each with its own parameters, Adam optimiser (Kingma & Ba, "Adam: a method
for stochastic optimization", 2015) and number of steps T, at the cosine learning rate

    lr_t = lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2

(Loshchilov & Hutter, "SGDR: stochastic gradient descent with warm restarts", 2017).

Every draw is a pure function of the step, from named streams (``condvae.streams``): the data
order of epoch e in phase p from ``"train/order"`` (p, e); a step's generator (augmentation,
binarisation, masks) from ``"train/batch"`` (p, t); and the global torch RNG, which draws z
inside the models, is reseeded from ``"train/noise"`` (p, t). So a checkpoint needs only the
trainee's tensors, the Adam moments and the counters to resume to a bit-identical run; it is
written atomically every ``checkpoint_every`` steps and after each validation, and resuming
checks that the run's settings (its identity) are unchanged. The checkpoint it replaces is kept
as ``checkpoint.prev.safetensors`` (``condvae.checkpoint``), so a newest checkpoint that was
truncated after it was written costs the steps since the previous one, with a warning, not the
run; only when both are unreadable does resuming fail.

Every ``valid_every`` steps and at the end of each phase a line goes to ``log.jsonl``; with a
``validate`` function the score is logged too, the best state kept in ``best.safetensors``
(reloaded at the end) and, with ``patience``, the run stops after that many validations
without improvement. Only this module writes into the output folder, and under torchrun only
rank 0 writes (``condvae.distributed``): every rank holds the same weights after every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from condvae import distributed
from condvae.checkpoint import (
    atomic_save_tensors,
    atomic_write_bytes,
    discard_temp_files,
    header_metadata,
    read_tensors,
)
from condvae.errors import CheckpointError, CondVAEError
from condvae.guards import check_device
from condvae.streams import generator, seed_for

CHECKPOINT = "checkpoint.safetensors"
PREVIOUS = "checkpoint.prev.safetensors"  # the checkpoint CHECKPOINT replaced, kept to fall back on
BEST = "best.safetensors"
LOG = "log.jsonl"
TRAIN_CONFIG = "train_config.json"


@dataclass(kw_only=True)
class LoopConfig:
    """The settings every training run shares (the run's config is written to ``train_config.json``)."""

    out: str
    data_dir: str | None = None
    batch_size: int = 128
    lr: float = 1e-3
    lr_min: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 1000
    limit_train: int | None = None
    device: str = "cpu"  # a torch.device is accepted and stored as its name (the config is JSON)
    # the global batch is cut into this many micro-batches, each with its own random draws, and
    # their gradients summed; under torchrun each rank takes every world-th one. None: as many
    # as processes. A run's weights depend on it, never on the number of processes.
    micro_batches: int | None = None

    positive: ClassVar[tuple[str, ...]] = ("batch_size", "checkpoint_every", "limit_train", "micro_batches")
    non_negative: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        """A CondVAEError naming the first setting that is out of range, before any work starts."""
        for name in (*self.positive, *self.non_negative):
            value, least = getattr(self, name), 1 if name in self.positive else 0
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                kind = "a positive" if least else "a non-negative"
                raise CondVAEError(f"{name}: expected {kind} integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CondVAEError(f"lr: expected a positive learning rate, got {self.lr}")
        self.device = str(check_device(self.device))
        if not (0 <= self.lr_min <= self.lr):
            raise CondVAEError(f"lr_min: expected a learning rate in [0, lr = {self.lr}], got {self.lr_min}")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share: all but where it writes and how often (and the
        number of micro-batches where it is 1, so that runs from before it existed resume)."""
        skip = {"out", "data_dir", "checkpoint_every", "device", "micro_batches"}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        micro = self.micro_batches or distributed.world()
        return out if micro == 1 else {**out, "micro_batches": micro}

    def micro(self) -> int:
        """The number of micro-batches, checked against the batch size and the processes."""
        micro, world = self.micro_batches or distributed.world(), distributed.world()
        if self.batch_size % micro:
            raise CondVAEError(f"micro_batches: {micro} does not divide batch_size {self.batch_size}")
        if micro % world:
            raise CondVAEError(f"micro_batches: {micro} is not a multiple of the {world} processes")
        return micro


@dataclass
class Phase:
    """The parameters one phase trains (with a fresh Adam optimiser) and its number of steps."""

    parameters: list[torch.nn.Parameter]
    steps: int


@dataclass
class Outcome:
    """What a run did: steps taken, best validation score, training seconds, stopped early or not."""

    steps: int
    best: float | None
    seconds: float
    stopped: bool


@dataclass
class Trainee:
    """What a trainer hands the loop.

    ``step(phase, t, batch, gen)`` returns the loss of step t of the phase on the training items
    ``batch`` (indices), drawing its randomness from ``gen``, optionally with scalars to log.
    ``validate()`` returns a score (higher is better) and the scalars to log. ``save(outcome,
    training)`` writes the result, its card's ``training`` section started by the loop.
    """

    module: torch.nn.Module  # checkpointed; its best state is kept and reloaded at the end
    phases: list[Phase]
    items: int  # training items, a fresh order of them each epoch
    step: Callable[[int, int, torch.Tensor, torch.Generator], Any]
    save: Callable[[Outcome, dict[str, Any]], None]
    validate: Callable[[], tuple[float, dict[str, float]]] | None = None
    valid_every: int | None = None  # steps; default once per epoch
    patience: int = 0
    identity: dict[str, Any] = field(default_factory=dict)  # more that a resume must share


def learning_rate(cfg: LoopConfig, t: int, steps: int) -> float:
    """The cosine decay from ``cfg.lr`` at t = 0 to ``cfg.lr_min`` at t = ``steps``."""
    progress = min(t / max(steps, 1), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * progress))


@functools.lru_cache(maxsize=1)
def _order(items: int, seed: int, phase: int, epoch: int) -> torch.Tensor:
    """The order of the training items in an epoch of a phase."""
    return torch.randperm(items, generator=generator(seed, "train/order", phase, epoch))


class _Steps(torch.nn.Module):
    """The trainee's step as a module's forward, so that DistributedDataParallel can wrap it:
    its gradient hooks fire in the backward of what ``forward`` returns."""

    def __init__(self, trainee: Trainee) -> None:
        super().__init__()
        self.module, self.fn = trainee.module, trainee.step

    def forward(self, phase: int, t: int, batch: torch.Tensor, gen: torch.Generator) -> Any:
        return self.fn(phase, t, batch, gen)


def _step(
    cfg: LoopConfig, trainee: Trainee, optim: torch.optim.Optimizer, phase: int, t: int, steps: Any
) -> dict:
    """Step t of the phase: the trainee's loss over the global batch, then Adam at the cosine
    learning rate; what to log.

    The global batch is cut into M micro-batches; micro-batch k draws from its own streams, so
    that its randomness does not depend on who computes it. Each rank takes every world-th
    one, scales its losses by world / M, and DistributedDataParallel averages the gradients
    over the ranks: the sum over k of grad(loss_k) / M, whatever the number of processes.
    """
    per_epoch, total = trainee.items // cfg.batch_size, trainee.phases[phase].steps
    epoch, i = divmod(t, per_epoch)
    batch = _order(trainee.items, cfg.seed, phase, epoch)[i * cfg.batch_size : (i + 1) * cfg.batch_size]
    micro, world, rank = cfg.micro(), distributed.world(), distributed.rank()
    mine = list(range(rank, micro, world))
    optim.zero_grad(set_to_none=True)
    loss_sum, scalars = torch.zeros((), dtype=torch.float64), {}
    for j, k in enumerate(mine):
        key = (phase, t) if micro == 1 else (phase, t, k)  # one micro-batch: the streams as before
        torch.manual_seed(seed_for(cfg.seed, "train/noise", *key))  # the z drawn inside the models
        part = batch.view(micro, -1)[k]
        last = j == len(mine) - 1
        with contextlib.nullcontext() if last or world == 1 else steps.no_sync():
            loss = steps(phase, t, part, generator(cfg.seed, "train/batch", *key))
            loss, found = loss if isinstance(loss, tuple) else (loss, {})
            if world == 1 and not torch.isfinite(loss):  # said before the step, not after it
                _diverged(loss, t, phase)
            (loss * (world / micro)).backward()
        loss_sum += loss.detach().double().cpu()
        scalars = scalars or found
    mean = float(distributed.total(loss_sum)) / micro
    if not math.isfinite(mean):  # every rank sees the same total, so all stop together
        _diverged(torch.tensor(mean), t, phase)
    lr = learning_rate(cfg, t, total)
    for group in optim.param_groups:
        group["lr"] = lr
    optim.step()
    return {"epoch": (t + 1) / per_epoch, "train_loss": mean, "lr": lr, **scalars}


def _diverged(loss: torch.Tensor, t: int, phase: int) -> None:
    raise CondVAEError(f"lr: training diverged (loss {float(loss)}) at step {t} of phase {phase}; lower lr")


def _wrap(trainee: Trainee, phase: int) -> Any:
    """The step to call: plain in one process, in DistributedDataParallel under torchrun (a
    phase trains some of the module's parameters: the others are unused, which DDP is told)."""
    steps = _Steps(trainee)
    if distributed.world() == 1:
        return steps
    trained = {id(p) for p in trainee.phases[phase].parameters}
    unused = any(p.requires_grad and id(p) not in trained for p in trainee.module.parameters())
    return torch.nn.parallel.DistributedDataParallel(steps, find_unused_parameters=unused)


def _start(cfg: LoopConfig, trainee: Trainee, identity: dict, resume: bool) -> tuple[dict, dict, str]:
    """The counters, tensors and Adam groups to start from; refuses to overwrite a run or resume nothing."""
    out = Path(cfg.out)
    if ((out / CHECKPOINT).exists() or (out / PREVIOUS).exists()) and not resume:
        raise CondVAEError(
            f"out: {str(out)!r} already holds a training checkpoint; pass resume=True (--resume) "
            "to continue it or choose another output folder"
        )
    if resume:
        return _resume(out, trainee, identity)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / TRAIN_CONFIG, json.dumps(dataclasses.asdict(cfg), indent=2).encode())
    return {"step": 0, "best": None, "bad": 0, "stopped": False, "elapsed": 0.0}, {}, "[]"


def _read(path: Path) -> tuple[dict, dict, dict, str]:
    """A checkpoint's settings, counters, tensors and Adam groups; CheckpointError if unreadable."""
    tensors, meta = read_tensors(path)
    try:
        saved, state = json.loads(meta["train_config"]), json.loads(meta["loop"])
        return saved, state, tensors, meta["param_groups"]
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint: {str(path)!r} is not a condvae training checkpoint") from None


def _written_step(path: Path) -> int:
    """The step an unreadable checkpoint was written at, from its header if that survived; else -1."""
    try:
        step = json.loads(header_metadata(path)["loop"])["step"]
    except (KeyError, TypeError, json.JSONDecodeError):
        return -1
    return step if isinstance(step, int) else -1


def _resume(out: Path, trainee: Trainee, identity: dict) -> tuple[dict, dict, str]:
    """Load the model state of the newest readable checkpoint written with ``identity``.

    The newest is ``CHECKPOINT``; if it cannot be read (truncated, corrupt, or missing because a
    kill fell inside the rename where hard links are unsupported) the run resumes from
    ``PREVIOUS`` with a warning naming both and the steps retrained, since a lost stretch of
    training is recoverable and a lost run is not. Both unreadable is a CheckpointError. A
    readable checkpoint with other settings is refused, never skipped: that is the user's
    mistake, not damage. Returns its counters, tensors and Adam groups.
    """
    path, previous = out / CHECKPOINT, out / PREVIOUS
    if not path.exists() and not previous.exists():
        raise CondVAEError(f"resume: no checkpoint to resume in {str(out)!r}")
    discard_temp_files(path)  # a write killed before its rename; the file it would replace is whole
    try:
        saved, state, tensors, groups = _read(path)
    except CheckpointError as bad:
        if not previous.exists():
            raise
        try:
            saved, state, tensors, groups = _read(previous)
        except CheckpointError as also:
            raise CheckpointError(f"{bad}; the previous checkpoint is unusable too: {also}") from None
        lost = _written_step(path)
        retrained = f"steps {state['step'] + 1} to {lost}" if lost > state["step"] else "the steps after it"
        warnings.warn(
            f"{bad}; resuming from {str(previous)!r} at step {state['step']} ({retrained} are trained again)",
            stacklevel=4,
        )
        path = previous
    if saved != identity:
        diff = sorted(k for k in {**saved, **identity} if saved.get(k) != identity.get(k))
        raise CheckpointError(
            f"resume: checkpoint {str(path)!r} was written with different settings ({diff})"
        )
    trainee.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return state, tensors, groups


def _save(path: Path, trainee: Trainee, optim: torch.optim.Optimizer, identity: dict, state: dict) -> None:
    """Model tensors, Adam moments, settings and counters in one atomically written file.

    The complete checkpoint it replaces becomes ``PREVIOUS``, the fallback ``_resume`` needs.
    """
    optim_state = optim.state_dict()
    tensors = {f"model.{k}": v for k, v in trainee.module.state_dict().items()}
    for idx, entry in optim_state["state"].items():
        tensors.update({f"optim.{idx}.{k}": v for k, v in entry.items() if isinstance(v, torch.Tensor)})
    meta = {"train_config": json.dumps(identity), "loop": json.dumps(state)}
    meta["param_groups"] = json.dumps(optim_state["param_groups"])
    atomic_save_tensors(path, tensors, meta, keep=path.with_name(PREVIOUS))


def _restore(optim: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    optim.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def _validate(trainee: Trainee, out: Path, state: dict) -> dict[str, float]:
    """Score the trainee, keep the best state and count validations without improvement."""
    if trainee.validate is None:
        return {}
    score, scalars = trainee.validate()
    if state["best"] is None or score > state["best"]:
        state["best"], state["bad"] = score, 0
        if distributed.is_main():  # every rank scores the same weights alike; one writes
            atomic_save_tensors(out / BEST, trainee.module.state_dict(), {"step": str(state["step"])})
    else:
        state["bad"] += 1
        state["stopped"] = bool(trainee.patience and state["bad"] >= trainee.patience)
    return scalars


def _log(out: Path, record: dict[str, float], bar: tqdm) -> None:
    if not distributed.is_main():
        return
    bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k not in ("step", "phase")})
    with open(out / LOG, "a") as log:
        log.write(json.dumps(record) + "\n")


def _finish(cfg: LoopConfig, trainee: Trainee, state: dict, seconds: float) -> Outcome:
    """Reload the best state, then save the result with the card's training section (rank 0)."""
    distributed.barrier()  # rank 0's last writes are complete before anyone reads them
    if (Path(cfg.out) / BEST).exists():
        trainee.module.load_state_dict(read_tensors(Path(cfg.out) / BEST)[0])
    trainee.module.eval()
    outcome = Outcome(state["step"], state["best"], seconds, state["stopped"])
    training = {
        "steps": outcome.steps,
        "batch_size": cfg.batch_size,
        "optimiser": f"Adam, lr {cfg.lr} cosine-decayed to {cfg.lr_min}"
        + (" per phase" if len(trainee.phases) > 1 else ""),
        "seed": cfg.seed,
        "training_seconds": round(seconds, 1),
        "device": cfg.device,
        "torch": torch.__version__,
    }
    if distributed.world() > 1:
        training["processes"] = distributed.world()
    if cfg.micro() > 1:
        training["micro_batches"] = cfg.micro()
    if distributed.is_main():
        trainee.save(outcome, training)
    distributed.barrier()
    return outcome


def run(
    cfg: LoopConfig, trainee: Trainee, resume: bool = False, progress: bool = True, desc: str = ""
) -> Outcome:
    """Train ``trainee`` through its phases into ``cfg.out``; see the module docstring."""
    distributed.setup(cfg.device)
    cfg.micro()  # a batch the micro-batches or the processes cannot share is refused first
    out, identity = Path(cfg.out), {**cfg.identity(), **trainee.identity}
    state, tensors, groups = _start(cfg, trainee, identity, resume)
    valid_every = trainee.valid_every or trainee.items // cfg.batch_size
    started, elapsed = time.perf_counter(), state["elapsed"]
    total = sum(p.steps for p in trainee.phases)
    bar = tqdm(
        total=total, initial=state["step"], disable=not progress or not distributed.is_main(), desc=desc
    )
    trainee.module.train()
    end = 0
    for phase, spec in enumerate(trainee.phases):
        first, end = end, end + spec.steps  # this phase's global steps
        optim = torch.optim.Adam(spec.parameters, lr=cfg.lr)
        if first < state["step"] < end:  # resumed mid-phase: its Adam moments continue
            _restore(optim, tensors, groups)
        steps = _wrap(trainee, phase)
        while state["step"] < end and not state["stopped"]:
            t = state["step"] - first
            record = {
                "step": state["step"] + 1,
                "phase": phase,
                **_step(cfg, trainee, optim, phase, t, steps),
            }
            state["step"] += 1
            bar.update(1)
            if (t + 1) % valid_every == 0 or t + 1 == spec.steps:
                _log(out, {**record, **_validate(trainee, out, state)}, bar)
            elif state["step"] % cfg.checkpoint_every:
                continue
            state["elapsed"] = elapsed + time.perf_counter() - started
            if distributed.is_main():
                _save(out / CHECKPOINT, trainee, optim, identity, state)
    bar.close()
    return _finish(cfg, trainee, state, elapsed + time.perf_counter() - started)
