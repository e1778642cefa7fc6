"""The ``ipa-sir`` method: the partial encoder's answer corrected by importance resampling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch.distributions import Distribution

from condvae.conditioning.base import Query
from condvae.conditioning.importance import Importance, ImportanceDiagnostics
from condvae.conditioning.registry import register
from condvae.partial.encoder import PartialEncoder
from condvae.partial.ipa import resolve_encoder


@dataclasses.dataclass
class SIRDiagnostics(ImportanceDiagnostics):
    encoder: str = ""  # the partial encoder's name


@register("ipa-sir")
class IPASIR(Importance):
    """Sampling-importance-resampling with the partial encoder as proposal:

        z_k ~ r(z) = (1 - a) r_psi(z | x * m, m) + a p(z),   w_k = p(x_o, z_k) / r(z_k),

    and draws picked with probabilities w_k / sum_j w_j. ``ipa`` alone is one network
    evaluation, but the encoder is trained for the average mask and can be narrow or off for
    this one; the weights correct it towards p(z | x_o) for the price of K decoder passes on the
    evidence only, and the prior part a keeps them bounded where r misses a mode. Its effective
    sample size says per query how far to trust that (a ``ConditioningWarning`` below
    ``min_ess``), and ``log_evidence()`` estimates log p(x_o).

    Arguments:
        particles: K, proposals per query.
        defensive: the prior weight a of the proposal, in [0, 1].
        min_ess: the effective sample size below which a query is flagged (as ``importance``).
        encoder: the partial encoder, as for ``ipa``.
        objective: which bundled encoder None picks, as for ``ipa``.

    References:
        Harvey, Naderiparizi & Wood, "Conditional Image Generation by Conditioning Variational
        Auto-Encoders", ICLR 2022, arXiv:2102.12037 (the partial encoder).
        Rubin, "Using the SIR algorithm to simulate posterior distributions", 1988.
        Hesterberg, "Weighted average importance sampling and defensive mixture
        distributions", 1995.
    """

    diagnostics_type = SIRDiagnostics
    diagnostics: SIRDiagnostics

    def __init__(
        self,
        query: Query,
        *,
        particles: int = 1000,
        defensive: float = 0.1,
        min_ess: float | None = None,
        encoder: PartialEncoder | str | Path | None = None,
        objective: str = "forward",
    ) -> None:
        super().__init__(query, particles=particles, defensive=defensive, min_ess=min_ess)
        self.partial = resolve_encoder(query.vae, encoder, objective).to(query.vae.device).eval()
        self.diagnostics.encoder = self.partial.card.get("name", "partial encoder")

    def encoder(self) -> Distribution:
        """r_psi(z | x * m, m), the partial encoder's answer for each query."""
        return self.partial(self.query.x, self.query.mask, self.query.vae)
