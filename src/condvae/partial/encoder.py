"""The partial encoder r_psi(z | x_o, m) of IPA (Harvey, Naderiparizi & Wood, "Conditional Image
Generation by Conditioning Variational Auto-Encoders", 2022).

One network, trained once over a distribution of masks, answers any query with one forward
pass: its input is the evidence with the unobserved values zeroed and the mask itself,
concatenated as channels ``[x * m, m]``. Its output is a Gaussian over z:

- flat models (MLP, convolutional, anything else): N(mu, diag(sigma^2)) or, with
  ``covariance="full"``, N(mu, L L^T) with a Cholesky factor (the linear-Gaussian posterior has
  a full covariance);
- the top-down hierarchical VAE: one head per latent group, each reading the *decoder's* state
  s_{l-1} of the groups above, r(z | x_o) = prod_l N(z_l; head_l([h(x_o, m), s_{l-1}])).

For the bundled MLP and convolutional VAEs the network copies the VAE encoder's layers, the
first layer widened to take the mask (its new weights zero), so that at the start
r(z | x * 1, 1) = q(z | x): the initialisation Harvey et al. use for IPA-R, used here for both.

A partial encoder is tied to the VAE it was trained for: it stores that VAE's fingerprint (a
hash of its weights) and is refused against any other.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from condvae.errors import CondVAEError
from condvae.models import MLPVAE, VAE, ConvVAE, HierarchicalVAE, TopDownGaussian
from condvae.models.hierarchical import gaussian_head
from condvae.models.mlp import mlp
from condvae.store import fingerprint

COVARIANCES = ("diagonal", "full")


def vae_name(vae: VAE) -> str:
    return (
        str(vae.card.get("name", f"an unnamed {vae.architecture} VAE"))
        if vae.card
        else (f"an unnamed {vae.architecture} VAE")
    )


def masked_input(x: torch.Tensor, mask: torch.Tensor, data_shape: tuple[int, ...]) -> torch.Tensor:
    """[x * m, m] along the channel axis (images) or the feature axis (vectors).

    ``torch.where`` rather than a product: unobserved values may be NaN (missing table entries).
    """
    m = mask.to(x.dtype)
    return torch.cat([torch.where(mask.bool(), x, torch.zeros_like(x)), m], dim=-len(data_shape))


def _widen_first(layer: nn.Module) -> nn.Module:
    """The encoder's first layer with its input doubled; the mask's weights start at zero."""
    if isinstance(layer, nn.Linear):
        wide = nn.Linear(2 * layer.in_features, layer.out_features)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : layer.in_features] = layer.weight
            wide.bias.copy_(layer.bias)
        return wide
    if isinstance(layer, nn.Conv2d):
        wide = nn.Conv2d(
            2 * layer.in_channels,
            layer.out_channels,
            layer.kernel_size,  # type: ignore[arg-type]
            stride=layer.stride,  # type: ignore[arg-type]
            padding=layer.padding,  # type: ignore[arg-type]
        )
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : layer.in_channels] = layer.weight
            wide.bias.copy_(layer.bias)  # type: ignore[union-attr]
        return wide
    raise CondVAEError(f"encoder: cannot widen a first layer of type {type(layer).__name__}")


class PartialEncoder(nn.Module):
    """Base: ``forward(x, mask)`` is r(z | x_o, m); ``forward_kl`` and ``reverse_loss`` train it."""

    kind = ""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.data_shape = vae.data_shape
        self.latent_dim = vae.latent_dim
        self.vae_fingerprint = fingerprint(vae)
        self.vae_name = vae_name(vae)
        self.card: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor, vae: VAE) -> Distribution:  # type: ignore[override]
        raise NotImplementedError

    def forward_kl(self, vae: VAE, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """O_for per item, ``[B]``: E_q(z|x) KL(q(z | x) || r(z | x_o, m)), analytic per group.

        Equal to -E_q log r(z | x_o, m) up to the entropy of q, which does not depend on psi.
        """
        raise NotImplementedError

    def reverse_loss(self, vae: VAE, x: torch.Tensor, mask: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """-O_rev per item, ``[B]``: -E_r[log p(x_o | z) + log p(z) - log r(z | x_o, m)] (IPA-R)."""
        r = self(x, mask, vae)
        z = r.rsample((samples,))
        c_elbo = vae.log_likelihood(x, z, mask) + vae.prior.log_prob(z) - r.log_prob(z)
        return -c_elbo.mean(0)

    def check_vae(self, vae: VAE, where: str | None = None) -> None:
        """Refuse a VAE other than the one this encoder was trained for, naming both."""
        found = fingerprint(vae)
        if found != self.vae_fingerprint:
            name = repr(self.card.get("name", "this partial encoder")) + (f" ({where})" if where else "")
            raise CondVAEError(
                f"encoder: {name} was trained for the VAE {self.vae_name!r} (fingerprint "
                f"{self.vae_fingerprint}), not for {vae_name(vae)!r} (fingerprint {found}); "
                "load the VAE it was trained for or train a partial encoder for this one"
            )


class FlatPartialEncoder(PartialEncoder):
    """A Gaussian r(z | x_o, m) over a flat latent (one group)."""

    kind = "flat"

    def __init__(self, vae: VAE, covariance: str = "diagonal", hidden: list[int] | None = None) -> None:
        super().__init__(vae)
        if covariance not in COVARIANCES:
            raise CondVAEError(f"covariance: expected one of {COVARIANCES}, got {covariance!r}")
        self.covariance = covariance
        d = vae.latent_dim
        if isinstance(vae, MLPVAE | ConvVAE) and hidden is None:
            encoder = copy.deepcopy(vae.encoder)
            encoder[0] = _widen_first(encoder[0])
            self.hidden: list[int] | None = None
            # MLPVAE.encode flattens before its encoder; the conv encoder flattens inside
            flatten = [nn.Flatten()] if isinstance(vae, MLPVAE) else []
            self.body, self.head = nn.Sequential(*flatten, *encoder[:-1]), encoder[-1]
            width = self.head.in_features  # type: ignore[union-attr]
        else:  # no encoder to copy: a fresh MLP on the flattened [x * m, m]
            self.hidden = [int(h) for h in (hidden or [256, 256])]
            self.body = nn.Sequential(
                nn.Flatten(), mlp([2 * math.prod(vae.data_shape), *self.hidden], "relu"), nn.ReLU()
            )
            self.head = nn.Linear(self.hidden[-1], 2 * d)
            width = self.hidden[-1]
        self.off_diagonal = nn.Linear(width, d * (d - 1) // 2) if covariance == "full" else None
        if self.off_diagonal is not None:
            nn.init.zeros_(self.off_diagonal.weight)
            nn.init.zeros_(self.off_diagonal.bias)
        self.register_buffer("_tril", torch.tril_indices(d, d, offset=-1), persistent=False)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "covariance": self.covariance, "hidden": self.hidden}

    def forward(self, x: torch.Tensor, mask: torch.Tensor, vae: VAE | None = None) -> Distribution:  # type: ignore[override]
        lead = x.shape[: x.dim() - len(self.data_shape)]
        inp = masked_input(x, mask, self.data_shape).reshape(-1, *self._input_shape)
        h = self.body(inp)
        loc, pre = self.head(h).chunk(2, dim=-1)
        scale = nn.functional.softplus(pre) + 1e-4
        loc, scale = loc.reshape(*lead, -1), scale.reshape(*lead, -1)
        if self.off_diagonal is None:
            return Independent(Normal(loc, scale, validate_args=False), 1)
        tril = torch.diag_embed(scale)
        tril[..., self._tril[0], self._tril[1]] = self.off_diagonal(h).reshape(*lead, -1)
        return MultivariateNormal(loc, scale_tril=tril, validate_args=False)

    @property
    def _input_shape(self) -> tuple[int, ...]:
        return (2 * self.data_shape[0], *self.data_shape[1:])

    def forward_kl(self, vae: VAE, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, r = vae.encode(x), self(x, mask)
        if not (_is_gaussian(q) and _is_gaussian(r)):
            # no closed form: -E_q log r, equal to the KL up to the entropy of q (constant in psi)
            return -r.log_prob(q.sample())
        if isinstance(q, MultivariateNormal) or isinstance(r, MultivariateNormal):
            q, r = _as_mvn(q), _as_mvn(r)
        return torch.distributions.kl_divergence(q, r)


def _is_gaussian(dist: Distribution) -> bool:
    return isinstance(dist, MultivariateNormal) or (
        isinstance(dist, Independent) and isinstance(dist.base_dist, Normal)
    )


def _as_mvn(dist: Distribution) -> MultivariateNormal:
    if isinstance(dist, MultivariateNormal):
        return dist
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        return MultivariateNormal(dist.mean, scale_tril=torch.diag_embed(dist.stddev), validate_args=False)
    raise CondVAEError(f"encoder: O_for needs a Gaussian encoder q(z | x), got {type(dist).__name__}")


class TopDownPartialEncoder(PartialEncoder):
    """r(z | x_o, m) for a :class:`HierarchicalVAE`: a bottom-up summary of [x * m, m] and one
    head per group over the decoder's state, copied from the VAE's posterior heads."""

    kind = "topdown"

    def __init__(self, vae: VAE) -> None:
        if not isinstance(vae, HierarchicalVAE):
            raise CondVAEError(
                f"encoder: a top-down partial encoder needs a hierarchical VAE, got {vae.architecture!r}"
            )
        super().__init__(vae)
        self.groups = list(vae.groups)
        body = copy.deepcopy(vae.bottom_up)
        body[0][0] = _widen_first(body[0][0])  # bottom_up = Sequential(mlp(...), act)
        self.body = body
        self.heads = copy.deepcopy(vae.posterior_heads)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        inp = masked_input(x, mask, self.data_shape)
        return self.body(inp.flatten(start_dim=inp.dim() - len(self.data_shape)))

    def head(self, feats: torch.Tensor):
        def group(g: int, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            context = feats.expand(*state.shape[:-1], feats.shape[-1])
            return gaussian_head(self.heads[g](torch.cat([context, state], -1)))

        return group

    def forward(self, x: torch.Tensor, mask: torch.Tensor, vae: VAE) -> Distribution:  # type: ignore[override]
        feats = self.features(x, mask)
        return TopDownGaussian(vae, self.head(feats), feats.shape[:-1])  # type: ignore[arg-type]

    def forward_kl(self, vae: VAE, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert isinstance(vae, HierarchicalVAE)
        q_head = vae.posterior_head(vae.features(x))
        r_head = self.head(self.features(x, mask))
        state = vae.initial_state(x.shape[:1])
        kl = torch.zeros(x.shape[0], device=x.device)
        for g in range(len(self.groups)):
            q = Normal(*q_head(g, state), validate_args=False)
            r = Normal(*r_head(g, state), validate_args=False)
            kl = kl + torch.distributions.kl_divergence(q, r).sum(-1)
            state = vae.step(g, state, q.rsample())  # z_l ~ q: the next group's KL is at z_<=l
        return kl


class NativePartialEncoder(PartialEncoder):
    """r(z | x_o, m) for a VAE whose own encoder reads ``[x * m, m]`` (``encode_partial``, as the
    tabular VAE's does): a copy of it, so that r = q(z | x_o, m) at the start, then trained
    over masks. Its O_for target q(z | x) is the VAE's encoder on the observed (non-NaN) entries."""

    kind = "native"

    def __init__(self, vae: VAE) -> None:
        super().__init__(vae)
        self.net = copy.deepcopy(vae)
        self.net.decoder = nn.Sequential()  # only the encoder is used: no decoder weights to store

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def forward(self, x: torch.Tensor, mask: torch.Tensor, vae: VAE | None = None) -> Distribution:  # type: ignore[override]
        return self.net.encode_partial(x, mask)  # type: ignore[operator]

    def forward_kl(self, vae: VAE, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.distributions.kl_divergence(vae.encode(x), self(x, mask))


def build_partial_encoder(
    vae: VAE, covariance: str = "diagonal", hidden: list[int] | None = None
) -> PartialEncoder:
    """The partial encoder that fits ``vae``: top-down for hierarchical VAEs, a copy of the
    encoder for VAEs with ``encode_partial`` (diagonal, no ``hidden``), flat otherwise."""
    if hasattr(vae, "encode_partial") and covariance == "diagonal" and hidden is None:
        return NativePartialEncoder(vae)
    if isinstance(vae, HierarchicalVAE):
        if covariance != "diagonal" or hidden is not None:
            raise CondVAEError(
                "covariance: a hierarchical VAE's partial encoder is diagonal per group "
                "(copied from its encoder)"
            )
        return TopDownPartialEncoder(vae)
    return FlatPartialEncoder(vae, covariance=covariance, hidden=hidden)
