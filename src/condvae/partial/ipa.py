"""The ``ipa`` method: amortized conditioning with a trained partial encoder, one forward pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from condvae.conditioning.base import Diagnostics, Posterior, Query, reparameterize
from condvae.conditioning.registry import register
from condvae.errors import CondVAEError
from condvae.models import VAE
from condvae.partial.encoder import PartialEncoder
from condvae.partial.pretrained import find_bundled, load_partial_encoder


def resolve_encoder(
    vae: VAE, encoder: PartialEncoder | str | Path | None, objective: str = "forward"
) -> PartialEncoder:
    """A partial encoder object, a bundled name or a directory; None: the bundled one for ``vae``."""
    if encoder is None:
        name = find_bundled(vae, objective)
        if name is None:
            raise CondVAEError(
                "encoder: no bundled partial encoder was trained for this VAE; train one with "
                "`condvae train-partial-encoder` and pass encoder=DIR"
            )
        encoder = name
    if isinstance(encoder, PartialEncoder):
        encoder.check_vae(vae)
        return encoder
    return load_partial_encoder(encoder, vae)


@dataclasses.dataclass
class IPADiagnostics(Diagnostics):
    encoder: str = ""  # the partial encoder's name


@register("ipa")
class IPA(Posterior):
    """q(z) = r_psi(z | x * m, m): the partial encoder's answer, no decoder evaluations.

    r is trained once over random masks (``condvae train-partial-encoder``); conditioning then
    costs one network evaluation. Its C-ELBO and query log-likelihood are computed like any other
    method's, so its gap to a per-query fit is measured, not assumed.

    Arguments:
        encoder: a ``PartialEncoder``, a bundled encoder's name or a directory; None takes the
            bundled encoder trained for this VAE with ``objective``.
        objective: which bundled encoder None picks: "forward" (IPA) or "reverse" (IPA-R).

    References:
        Harvey, Naderiparizi & Wood, "Conditional Image Generation by Conditioning Variational
        Auto-Encoders", ICLR 2022, arXiv:2102.12037.
    """

    diagnostics_type = IPADiagnostics

    def __init__(
        self, query: Query, *, encoder: PartialEncoder | str | Path | None = None, objective: str = "forward"
    ) -> None:
        super().__init__(query)
        self.encoder = resolve_encoder(query.vae, encoder, objective).to(query.vae.device).eval()
        self.diagnostics.encoder = self.encoder.card.get("name", "partial encoder")

    def run(self) -> None:
        self.r = self.encoder(self.query.x, self.query.mask, self.query.vae)

    def sample(self, n: int) -> torch.Tensor:
        eps = self.query.stream("ipa/sample").normal(n, self.query.latent_dim, self.draw_index())
        return reparameterize(self.r, eps)

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.r.log_prob(z)

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample(n)
        return z, self.r.log_prob(z)
