"""The ``auto`` method, the default of ``condition``: the most honest answer the model and an
optional time budget allow, with the choice and its reason recorded in the diagnostics."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query, reparameterize
from condvae.conditioning.registry import METHODS, register
from condvae.errors import ConditioningWarning, CondVAEError
from condvae.partial.encoder import PartialEncoder
from condvae.partial.pretrained import find_bundled

# Decoder passes on the evidence per query, a backward pass counted as two forward ones: what
# the budget is compared against, after timing one pass on this batch.
GRID = ("grid", {}, 2 * 40_000)
GVI = ("gvi", {"steps": 500, "samples": 16}, 3 * 500 * 16)
SHORT_GVI = ("gvi", {"steps": 100, "samples": 16}, 3 * 100 * 16)
SIR = ("ipa-sir", {"particles": 1000}, 1000)
IPA = ("ipa", {}, 0)
ESCALATE = ("ais", {"particles": 128, "temperatures": 200}, 128 * 200 * 6 * 3)
CHECK = 1024  # draws of q whose importance weights judge each query


@dataclasses.dataclass
class AutoDiagnostics(Diagnostics):
    chosen: str = ""  # the method that answered (the escalated queries excepted)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    reason: str = ""
    effective_sample_size: torch.Tensor | None = None  # [B], of CHECK weighted draws of the answer
    escalated: list[int] = dataclasses.field(default_factory=list)  # queries answered by ais instead
    seconds_per_pass: float = 0.0  # one decoder pass on the evidence of the whole batch, measured


@register("auto")
class Auto(Posterior):
    """Chooses a method by what the model offers and the time allowed, then checks each query.

    The rule, in order (the measurements behind it are in the project's benchmarks page):

    1. A 2-d latent: ``grid``, the exact posterior (on MNIST, 40 queries at 5 % evidence:
       its query log-likelihood is within the 10000-draw metric's own noise of the truth).
    2. Otherwise ``gvi`` (500 steps), then every query checked: its answer is weighted against
       p(x_o, z) on 1024 draws, and a query whose effective sample size is below ``escalate``
       * 1024 (a dropped or misplaced mode, a wrong scale) is refitted by ``ais``, the
       sampler whose error falls with its length rather than with a family's flexibility,
       if the budget allows. The importance-weighted ``gvi`` (``iw=16``) is not used here:
       it is the best of the cheap methods on a 2-d latent but makes q far too broad on a
       50-d one (its draws then come from 16 candidates of a poor proposal).
    3. Where the predicted time of that exceeds ``budget``: a 100-step ``gvi``, then
       ``ipa-sir`` and ``ipa`` when the model has a partial encoder, the first that fits.

    The time is predicted from one decoder pass on this batch's evidence, timed before
    choosing; ``ipa-sir`` is checked by its own weights. Escalated queries are named in
    ``diagnostics.escalated``; ``diagnostics.chosen``, ``options`` and ``reason`` say what
    was chosen and why.

    Arguments:
        budget: seconds the fit may take for the whole batch; None: no limit.
        escalate: the fraction of the check's draws below which the effective sample size
            sends a query to ``ais``; 0 turns escalation off.
        encoder: the partial encoder for the budget fallbacks, as for ``ipa``; None: the
            bundled one for this model, if any.
    """

    diagnostics_type = AutoDiagnostics
    diagnostics: AutoDiagnostics

    def __init__(
        self,
        query: Query,
        *,
        budget: float | None = None,
        escalate: float = 0.01,
        encoder: PartialEncoder | str | Path | None = None,
    ) -> None:
        super().__init__(query)
        if budget is not None and (isinstance(budget, bool) or not budget > 0):
            raise CondVAEError(f"budget: expected a positive number of seconds or None, got {budget!r}")
        if not 0 <= escalate < 1:
            raise CondVAEError(f"escalate: expected a fraction in [0, 1), got {escalate!r}")
        self.budget, self.escalate = budget, float(escalate)
        self.encoder = encoder if encoder is not None else find_bundled(query.vae)
        self.parts: list[tuple[torch.Tensor, Posterior]] = []
        self._checked_evidence = torch.full((query.batch,), math.nan, device=query.x.device)

    def fit_memory(self) -> tuple[str, float]:
        return "budget", 0.0  # each chosen method checks its own memory when it is fitted

    def _seconds_per_pass(self) -> float:
        """One decoder pass on the evidence of every query: the fastest of 3 timings of 16
        prior draws (the fastest, since a busy machine only ever slows a timing down)."""
        q = self.query
        z = reparameterize(q.vae.prior, q.stream("auto/pilot").normal(16, q.latent_dim))
        q.vae.log_likelihood(q.x, z[:1], q.mask, q.prepared)  # warm-up: first-call costs
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            q.vae.log_likelihood(q.x, z, q.mask, q.prepared)
            best = min(best, time.perf_counter() - start)
        return best / 16

    def choose(self) -> tuple[str, dict[str, Any], str]:
        """The method, its options and the reason, by the rule in the class docstring."""
        q, per_pass = self.query, self.diagnostics.seconds_per_pass
        first = GRID if q.latent_dim == 2 else GVI
        why = (
            "2-d latent: the exact grid posterior"
            if q.latent_dim == 2
            else f"latent {q.latent_dim}: gvi, each query checked by importance weights"
        )
        candidates = [first, SHORT_GVI] + ([SIR, IPA] if self.encoder is not None else [])
        for name, options, passes in candidates:
            predicted = passes * per_pass
            if self.budget is None or predicted <= self.budget:
                if name != first[0] or options != first[1]:
                    why = (
                        f"budget {self.budget:g} s: {first[0]} {first[1]} would take about "
                        f"{first[2] * per_pass:.3g} s; {name} {options} about {predicted:.3g} s"
                    )
                elif self.budget is not None:
                    why += f", predicted {predicted:.3g} s within the budget {self.budget:g} s"
                return name, options, why
        name, options, passes = candidates[-1]
        return (
            name,
            options,
            (
                f"budget {self.budget:g} s: even the cheapest method ({name}) is predicted to take "
                f"{passes * per_pass:.3g} s; it was used anyway"
            ),
        )

    def _fit(self, name: str, options: dict[str, Any], rows: torch.Tensor | None = None) -> Posterior:
        q = self.query
        query = q if rows is None else Query(q.vae, q.x[rows], q.mask[rows], q.seed)
        if name in ("ipa", "ipa-sir"):
            options = {**options, "encoder": self.encoder}
        with warnings.catch_warnings():  # low effective sample sizes are judged below instead
            warnings.simplefilter("ignore", ConditioningWarning)
            return METHODS[name].fit(query, **options)

    def _ess(self, post: Posterior) -> torch.Tensor | None:
        """Effective sample size of the answer's draws weighted by p(x_o, z) / q(z), ``[B]``."""
        ess = getattr(post.diagnostics, "effective_sample_size", None)
        if ess is not None or post.exact:
            return ess
        if not post.has_density:
            return None
        z, log_q = post.sample_and_log_prob(CHECK)
        log_w = self.query.log_joint(z) - log_q
        self._checked_evidence = torch.logsumexp(log_w, 0) - math.log(CHECK)
        return 1.0 / (torch.softmax(log_w, 0) ** 2).sum(0)

    def run(self) -> None:
        q, d = self.query, self.diagnostics
        d.seconds_per_pass = self._seconds_per_pass()
        name, options, d.reason = self.choose()
        d.chosen, d.options = name, dict(options)
        self.main = self._fit(name, options)
        d.effective_sample_size = ess = self._ess(self.main)
        scale = CHECK if name not in ("ipa-sir",) else options["particles"]
        if ess is not None and self.escalate > 0:
            low = (ess < self.escalate * scale).nonzero().flatten()
            cost = len(low) / q.batch * ESCALATE[2] * d.seconds_per_pass
            if len(low) and (self.budget is None or cost <= self.budget):
                self.parts = [(low, self._fit(ESCALATE[0], ESCALATE[1], low))]
                d.escalated = low.tolist()
                queries = f"{len(low)} quer{'y' if len(low) == 1 else 'ies'}"
                d.reason += f"; {queries} with a low effective sample size refitted by ais"
        d.decoder_evaluations_per_query = self.main.diagnostics.decoder_evaluations_per_query

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        z = self.main.sample(n)
        for rows, post in self.parts:
            z[:, rows] = post.sample(n)
        return z

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The answer's log q(z) where no query was escalated (ais gives draws, no density)."""
        if self.parts:
            raise CondVAEError(
                f"method 'auto' cannot score arbitrary z: queries {self.diagnostics.escalated} "
                "were answered by ais, which gives draws without a density"
            )
        return self.main.log_prob(z)

    def log_evidence(self) -> torch.Tensor:
        """The answer's own estimate of log p(x_o) where it has one, else the importance
        estimate from the check's weighted draws; ais's for the escalated queries."""
        own = type(self.main).log_evidence is not Posterior.log_evidence
        values = self.main.log_evidence().clone() if own else self._checked_evidence.clone()
        for rows, post in self.parts:
            values[rows] = post.log_evidence()
        return values

    def __repr__(self) -> str:
        return f"Auto(chosen={self.diagnostics.chosen!r}, escalated={len(self.diagnostics.escalated)})"


__all__ = ["Auto"]
