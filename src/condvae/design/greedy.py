"""Greedy sequential design: observe, estimate what each candidate would tell, take the best, repeat.

At step t every item has its own evidence; the chooser scores every candidate (its expected
information gain per unit cost, or a baseline's score), the best one not yet seen is revealed
(the true values of x are pasted into the evidence, as a sensor would report them), and the
prediction is updated. ``run`` is batched over items: no Python loop over them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from condvae.design.candidates import Candidates
from condvae.design.completions import Completions
from condvae.design.eig import EIG
from condvae.streams import generator

Complete = Callable[[torch.Tensor, torch.Tensor, int, str, int], Completions]
Predict = Callable[[torch.Tensor, torch.Tensor, Completions], dict[str, torch.Tensor]]


class Chooser(Protocol):
    """Scores ``[B, C]`` for step t (higher is better); ``estimates`` says whether they are EIGs."""

    estimates: bool

    def gains(
        self, x: torch.Tensor, mask: torch.Tensor, completions: Completions, step: int
    ) -> torch.Tensor: ...


@dataclass
class EIGChooser:
    """Expected information gain from ``completions`` (None: the prediction's own completions)."""

    eig: EIG
    candidates: Candidates
    completions: Complete | None = None
    n: int = 16
    estimates: bool = True

    def gains(self, x: torch.Tensor, mask: torch.Tensor, completions: Completions, step: int) -> torch.Tensor:
        if self.completions is not None:
            completions = self.completions(x, mask, self.n, self.eig.decoded, step)
        fill = completions.fill
        gains = x.new_empty(x.shape[0], len(self.candidates))
        alone = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for group in shared_evidence(x, mask):  # one estimate from all of the group's completions
            pooled = fill[group].reshape(1, -1, *fill.shape[2:])
            gains[group] = self.eig(x[group[:1]], mask[group[:1]], pooled, self.candidates)
            alone[group] = False
        if bool(alone.any()):
            gains[alone] = self.eig(x[alone], mask[alone], fill[alone], self.candidates)
        return gains


def shared_evidence(x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Groups (index tensors) of two or more items with the same evidence: the same mask and the
    same observed values. Their EIGs are the same quantity, so it is estimated once from all their
    completions together (at the first step, from no evidence, every item is in one group)."""
    key = torch.cat([mask.flatten(1).to(x.dtype), torch.where(mask, x, 0).flatten(1)], 1)
    _, group, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    return [(group == g).nonzero().flatten() for g in (counts > 1).nonzero().flatten().tolist()]


@dataclass
class RandomChooser:
    """A uniformly random candidate among those not yet seen."""

    candidates: Candidates
    seed: int = 0
    estimates: bool = False

    def gains(self, x: torch.Tensor, mask: torch.Tensor, completions: Completions, step: int) -> torch.Tensor:
        gen = generator(self.seed, "design/random", step)
        return torch.rand(x.shape[0], len(self.candidates), generator=gen).to(x.device)


@dataclass
class OrderChooser:
    """One fixed order for every item (EDDI's SING): the first candidate of ``order`` not yet seen."""

    order: list[int]
    candidates: Candidates
    estimates: bool = False

    def gains(self, x: torch.Tensor, mask: torch.Tensor, completions: Completions, step: int) -> torch.Tensor:
        rank = torch.full((len(self.candidates),), -float(len(self.candidates) + 1))
        rank[torch.tensor(self.order, dtype=torch.long)] = -torch.arange(len(self.order), dtype=torch.float32)
        return rank.to(x.device).expand(x.shape[0], -1)


def unseen(mask: torch.Tensor, candidates: Candidates) -> torch.Tensor:
    """``[B, C]``: True where candidate c would reveal something item b has not seen."""
    b = mask.shape[0]
    flat = torch.cat([~mask.reshape(b, -1), mask.new_zeros(b, 1)], 1)
    return flat[:, candidates.indices].any(-1)


def pick(gains: torch.Tensor, mask: torch.Tensor, candidates: Candidates, per_cost: bool) -> torch.Tensor:
    """The best candidate per item, ``[B]``: by gain per unit cost (EIG) or by score (baselines),
    among the candidates that show something new."""
    score = gains / candidates.costs if per_cost else gains.clone()
    return score.masked_fill(~unseen(mask, candidates), -float("inf")).argmax(1)


@dataclass
class DesignResult:
    """What a design run did, per item b and step t.

    - ``order`` ``[B, T]``: the candidate chosen at each step;
    - ``gains`` ``[B, T, C]``: every candidate's EIG at each step (NaN for the baselines that
      estimate none);
    - ``predictions``: name -> ``[B, T + 1, ...]``, the prediction after 0..T steps (``probs``
      and ``probs_completed`` for images; ``target_mean``, ``target_low`` and ``target_high``
      for a continuous target, ``target_probs`` and ``target_class`` for a discrete one);
    - ``seconds`` ``[T]``: wall time of each design step (completions, gains and choice, for
      all items together).
    """

    strategy: str
    candidates: Candidates
    x: torch.Tensor
    mask: torch.Tensor  # the evidence before the first step
    order: torch.Tensor
    gains: torch.Tensor
    predictions: dict[str, torch.Tensor]
    seconds: list[float] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.order.shape[1])

    def mask_after(self, t: int) -> torch.Tensor:
        """The evidence after ``t`` steps, ``[B, *data_shape]``."""
        mask = self.mask.clone()
        for s in range(t):
            mask |= self.candidates.masks.to(mask.device)[self.order[:, s]]
        return mask


def run(
    x: torch.Tensor,
    mask: torch.Tensor,
    candidates: Candidates,
    steps: int,
    chooser: Chooser,
    complete: Complete,
    predict: Predict,
    n: int,
    decoded: str,
    strategy: str = "",
    progress: Callable[[int], None] | None = None,
) -> DesignResult:
    """``steps`` greedy steps for every item of ``x`` from the evidence ``mask``.

    ``complete`` makes the completions the prediction uses after each step (and the EIG, unless
    the chooser brings its own); ``predict`` turns evidence and completions into predictions.
    """
    b, c = x.shape[0], len(candidates)
    candidates = candidates.to(x.device)
    first, mask = mask.clone(), mask.clone()
    order = torch.zeros(b, steps, dtype=torch.long, device=x.device)
    gains = torch.full((b, steps, c), float("nan"), device=x.device)
    predictions: dict[str, list[torch.Tensor]] = {}
    seconds = []
    for t in range(steps + 1):
        start = time.perf_counter()
        completions = complete(x, mask, n, decoded, t)
        took = time.perf_counter() - start
        for name, value in predict(x, mask, completions).items():
            predictions.setdefault(name, []).append(value)
        if t == steps:
            break
        start = time.perf_counter()
        scores = chooser.gains(x, mask, completions, t)
        chosen = pick(scores, mask, candidates, chooser.estimates)
        if chooser.estimates:
            gains[:, t] = scores
        order[:, t] = chosen
        mask = mask | candidates.masks[chosen]
        seconds.append(took + time.perf_counter() - start)
        if progress is not None:
            progress(t + 1)
    stacked = {name: torch.stack(values, 1) for name, values in predictions.items()}
    return DesignResult(strategy, candidates, x, first, order, gains, stacked, seconds)
