"""Top-down hierarchical VAE: latent groups z_1..z_L, each conditioned on the groups above.

Generative model (the ladder/top-down form of Sønderby et al. 2016 and NVAE, Vahdat & Kautz
2020, written as MLPs over the flattened image). A deterministic decoder state s_l summarises
the groups drawn so far:

    s_0 = a learned vector,   z_l ~ p(z_l | z_<l) = N(mu_l(s_{l-1}), sigma_l(s_{l-1})^2),
    s_l = s_{l-1} + f_l([s_{l-1}, z_l]),        x ~ p(x | z) = likelihood(g(s_L)).

Inference is top-down too: a bottom-up network summarises x as h(x) and each group's
posterior reads the same decoder state, q(z_l | x, z_<l) = N(mu'_l([h(x), s_{l-1}]), ...).
The ELBO's KL is a sum over groups of analytic Gaussian KLs at the sampled z_<l:

    KL(q(z | x) || p(z)) = E_q sum_l KL(q(z_l | x, z_<l) || p(z_l | z_<l)).

Behind the common protocol z is the concatenation [z_1, ..., z_L] (``latent_dim`` = the sum of
``groups``), ``prior`` and ``encode(x)`` are :class:`TopDownGaussian` distributions with
``log_prob`` and ``rsample``, so every per-query conditioning method runs on it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, Normal, constraints

from condvae.errors import CondVAEError
from condvae.models.base import VAE
from condvae.models.mlp import ACTIVATIONS, mlp
from condvae.models.precision import decoder_forward

Head = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def gaussian_head(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) from a head's raw output [..., 2 g]."""
    loc, pre = raw.chunk(2, dim=-1)
    return loc, nn.functional.softplus(pre) + 1e-3


class TopDownGaussian(Distribution):
    """A chain of Gaussian groups, z_l ~ N(head(l, s_{l-1})), over the decoder's states.

    ``head(l, state)`` gives group l's (loc, scale) from the state before it; ``batch_shape``
    is the shape of the context the head closes over (e.g. [B] for q(z | x), [] for p(z)).
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, model: HierarchicalVAE, head: Head, batch_shape: tuple[int, ...] = ()) -> None:
        self.model, self.head = model, head
        super().__init__(torch.Size(batch_shape), torch.Size([model.latent_dim]), validate_args=False)

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """z = the chain driven by standard normals ``eps`` [..., *batch, d] (reparameterised)."""
        state = self.model.initial_state(eps.shape[:-1])
        parts = []
        for g, noise in enumerate(eps.split(self.model.groups, dim=-1)):
            loc, scale = self.head(g, state)
            z_l = loc + scale * noise
            parts.append(z_l)
            state = self.model.step(g, state, z_l)
        return torch.cat(parts, -1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return self.from_noise(torch.randn(shape, device=self.model.device))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        state = self.model.initial_state(z.shape[:-1])
        total = torch.zeros((), device=z.device)
        for g, z_l in enumerate(z.split(self.model.groups, dim=-1)):
            loc, scale = self.head(g, state)
            total = total + Normal(loc, scale, validate_args=False).log_prob(z_l).sum(-1)
            state = self.model.step(g, state, z_l)
        return total

    @property
    def mean(self) -> torch.Tensor:
        """The chain run at each group's conditional mean (the mode path, not E[z])."""
        return self.from_noise(torch.zeros(self.batch_shape + self.event_shape, device=self.model.device))


class HierarchicalVAE(VAE):
    architecture = "hierarchical"

    def __init__(
        self,
        data_shape: tuple[int, ...] = (1, 28, 28),
        groups: list[int] | tuple[int, ...] = (4, 8, 16),
        hidden: list[int] | tuple[int, ...] = (512, 256),
        state: int = 256,
        likelihood: str = "bernoulli",
        activation: str = "elu",
    ) -> None:
        groups = [int(g) for g in groups]
        if len(groups) < 1 or min(groups) < 1:
            raise CondVAEError(f"groups: expected positive group sizes (top first), got {groups}")
        super().__init__(data_shape, sum(groups), likelihood)
        if activation not in ACTIVATIONS:
            raise CondVAEError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.groups, self.hidden, self.state_dim = groups, [int(h) for h in hidden], int(state)
        self.activation = activation
        data_dim = math.prod(self.data_shape)
        self.bottom_up = nn.Sequential(mlp([data_dim, *self.hidden], activation), ACTIVATIONS[activation]())
        self.top = nn.Parameter(torch.zeros(self.state_dim))
        self.prior_heads = nn.ModuleList(nn.Linear(self.state_dim, 2 * g) for g in groups)
        self.posterior_heads = nn.ModuleList(
            nn.Linear(self.hidden[-1] + self.state_dim, 2 * g) for g in groups
        )
        self.steps = nn.ModuleList(
            mlp([self.state_dim + g, self.state_dim, self.state_dim], activation) for g in groups
        )
        n_out = self.likelihood.params_per_dim * data_dim
        self.output = mlp([self.state_dim, *self.hidden[::-1], n_out], activation)

    def config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "data_shape": list(self.data_shape),
            "groups": self.groups,
            "hidden": self.hidden,
            "state": self.state_dim,
            "likelihood": self.likelihood.name,
            "activation": self.activation,
        }

    # -- the top-down pass -----------------------------------------------------------------
    def initial_state(self, shape: torch.Size) -> torch.Tensor:
        return self.top.expand(*shape, self.state_dim)

    def step(self, g: int, state: torch.Tensor, z_l: torch.Tensor) -> torch.Tensor:
        """s_l = s_{l-1} + f_l([s_{l-1}, z_l]) (residual, so deep chains start near identity)."""
        return state + self.steps[g](torch.cat([state, z_l], -1))

    def states(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The states s_0..s_L along ``z`` [..., d] (s_{l-1} is what group l is conditioned on)."""
        state = self.initial_state(z.shape[:-1])
        out = [state]
        for g, z_l in enumerate(z.split(self.groups, dim=-1)):
            state = self.step(g, state, z_l)
            out.append(state)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h(x), the bottom-up summary the posterior heads read, [..., hidden[-1]]."""
        return self.bottom_up(x.flatten(start_dim=x.dim() - len(self.data_shape)))

    def posterior_head(self, feats: torch.Tensor) -> Head:
        def head(g: int, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            context = feats.expand(*state.shape[:-1], feats.shape[-1])
            return gaussian_head(self.posterior_heads[g](torch.cat([context, state], -1)))

        return head

    def prior_head(self, g: int, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_head(self.prior_heads[g](state))

    # -- the protocol ----------------------------------------------------------------------
    @property
    def prior(self) -> Distribution:
        """p(z) = prod_l p(z_l | z_<l)."""
        return TopDownGaussian(self, self.prior_head)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z | x) = prod_l q(z_l | x, z_<l)."""
        feats = self.features(x)
        return TopDownGaussian(self, self.posterior_head(feats), feats.shape[:-1])

    def decode(self, z: torch.Tensor) -> Distribution:
        lead = z.shape[:-1]
        raw = decoder_forward(lambda z: self.output(self.states(z)[-1]), self.device, z)
        return self.likelihood(raw.reshape(*lead, *self._raw_shape))

    @property
    def _raw_shape(self) -> tuple[int, ...]:
        return (self.likelihood.params_per_dim * self.data_shape[0], *self.data_shape[1:])

    def elbo(self, x: torch.Tensor, beta: float = 1.0, samples: int = 1) -> torch.Tensor:
        """E_q[log p(x | z)] - beta sum_l E_q KL(q(z_l | x, z_<l) || p(z_l | z_<l)), ``[B]``."""
        feats = self.features(x).expand(samples, x.shape[0], -1)
        state = self.initial_state(feats.shape[:-1])
        kl = torch.zeros(samples, x.shape[0], device=x.device)
        for g in range(len(self.groups)):
            q = Normal(*self.posterior_head(feats)(g, state), validate_args=False)
            p = Normal(*self.prior_head(g, state), validate_args=False)
            z_l = q.rsample()
            kl = kl + torch.distributions.kl_divergence(q, p).sum(-1)
            state = self.step(g, state, z_l)
        raw = self.output(state).reshape(samples, x.shape[0], *self._raw_shape)
        per_dim = self.likelihood(raw).log_prob(x)
        rec = per_dim.flatten(start_dim=2).sum(-1)
        return (rec - beta * kl).mean(0)
