"""Expected information gain (EIG) of observing a candidate, batched over items x candidates x
completions: one interface, two estimators.

Both take the current evidence ``x``, ``mask`` ``[B, *data_shape]``, completions ``fill``
``[B, N, *data_shape]`` (draws of the whole x given the evidence, from any conditioning method,
the evidence pasted in) and ``Candidates``; both return ``[B, C]``.

- ``ClassifierEIG`` (Harvey, Naderiparizi & Wood, "Conditional Image Generation by Conditioning
  Variational Auto-Encoders", ICLR 2022, section 5): with g(c | partial image) a classifier,

      EIG(l) = H[ mean_n g(c | x_o, (x_hat_n)_l) ] - mean_n H[ g(c | x_o, (x_hat_n)_l) ],

  the mutual information between the class and what candidate l will show, under the
  completions; never negative (Jensen).
- ``LatentEIG`` (Ma, Tschiatschek, Palla, Hernández-Lobato, Nowozin & Zhang, "EDDI: Efficient
  Dynamic Discovery of High-Value Information with Partial VAE", ICML 2019): with r(z | x_o) a
  Gaussian partial encoder and y a target,

      EIG(i) = E_{x_i}[ KL(r(z | x_o, x_i) || r(z | x_o)) ]
               - E_{x_i, y}[ KL(r(z | x_o, x_i, y) || r(z | x_o, y)) ],

  the expectations over the completions, each KL analytic; without a target only the first term
  (information about z itself). With an exact posterior the difference is I(x_i; y | x_o) >= 0;
  with an approximate encoder and finitely many completions an estimate can dip below 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence

from condvae.design.candidates import Candidates
from condvae.errors import CondVAEError

# entries of the largest intermediate tensor built at once: 16 MB of float32 stays in cache
BLOCK = 1 << 22


class EIG(Protocol):
    """An information-gain estimator; ``decoded`` says which completions it wants: draws of
    p(x | z) ("sample") or the decoder's mean ("mean")."""

    decoded: str

    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor, candidates: Candidates
    ) -> torch.Tensor: ...


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H[p] = -sum_c p_c log p_c over the last axis (0 log 0 = 0)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def class_eig(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """H[mean over ``dim`` of p] - mean over ``dim`` of H[p], clamped at 0 against rounding."""
    return (entropy(probs.mean(dim)) - entropy(probs).mean(dim)).clamp_min(0)


def _blocks(items: int, completions: int, per_completion: int) -> list[tuple[slice, slice]]:
    """(items, completions) slices whose work is at most BLOCK entries: blocks of whole items, or
    for an item with very many completions (pooled ones), blocks of its completions."""
    per_item = completions * max(per_completion, 1)
    if per_item <= BLOCK:
        step = BLOCK // per_item
        return [(slice(i, min(i + step, items)), slice(None)) for i in range(0, items, step)]
    step = max(1, BLOCK // max(per_completion, 1))
    return [
        (slice(i, i + 1), slice(j, min(j + step, completions)))
        for i in range(items)
        for j in range(0, completions, step)
    ]


class ClassifierEIG:
    """EIG of each candidate about the class predicted by ``classifier``.

    ``classifier(x, mask)`` gives logits ``[..., classes]`` for partial images. A
    ``PartialClassifier`` is scored through its ``glimpse_logits`` (one first-layer update per
    candidate); any other classifier is run on each completed candidate image. ``decoded``:
    completions as draws of p(x | z) ("sample": what a sensor of binary images reports) or as the
    decoder's mean ("mean": a factorised likelihood's per-pixel noise is not what a camera sees).
    """

    def __init__(self, classifier: torch.nn.Module, decoded: str = "mean") -> None:
        if decoded not in ("mean", "sample"):
            raise CondVAEError(f"decoded: expected 'mean' or 'sample', got {decoded!r}")
        self.classifier, self.decoded = classifier, decoded

    @torch.no_grad()
    def probs(
        self, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor, candidates: Candidates
    ) -> torch.Tensor:
        """g(c | x_o, (x_hat_n)_l) for every item, completion and candidate: ``[B, N, C, classes]``."""
        b, n, c = x.shape[0], fill.shape[1], len(candidates)
        classes = int(self.classifier.classes)
        fast = getattr(self.classifier, "glimpse_logits", None)
        width = int(getattr(self.classifier, "hidden", (classes,))[0]) if fast else x[0].numel()
        out = x.new_empty(b, n, c, classes)
        for part, some in _blocks(b, n, c * max(width, classes)):
            block = fill[part, some]
            if fast is not None:
                logits = fast(x[part], mask[part], block, candidates.indices)
            else:
                shown = mask[part, None, None] | candidates.masks[None, None]  # [b, 1, C, ...]
                images = torch.where(mask[part, None, None], x[part, None, None], block[:, :, None])
                images, shown = torch.broadcast_tensors(images, shown)  # [b, N, C, ...]
                logits = self.classifier(images, shown)
            out[part, some] = logits.softmax(-1)
        return out

    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor, candidates: Candidates
    ) -> torch.Tensor:
        return class_eig(self.probs(x, mask, fill, candidates), dim=1)


Encoder = Callable[[torch.Tensor, torch.Tensor], Distribution]


def _gaussian(dist: Distribution, lead: tuple[int, ...]) -> Distribution:
    """A Gaussian r(z | ...) of batch ``[M]`` reshaped to batch ``lead``."""
    if isinstance(dist, MultivariateNormal):
        d = dist.loc.shape[-1]
        return MultivariateNormal(
            dist.loc.reshape(*lead, d), scale_tril=dist.scale_tril.reshape(*lead, d, d), validate_args=False
        )
    if isinstance(dist, Independent) and isinstance(dist.base_dist, Normal):
        d = dist.base_dist.loc.shape[-1]
        base = Normal(
            dist.base_dist.loc.reshape(*lead, d), dist.base_dist.scale.reshape(*lead, d), validate_args=False
        )
        return Independent(base, 1)
    raise CondVAEError(
        f"encoder: the latent-space EIG needs a Gaussian r(z | x_o) (Normal or MultivariateNormal), "
        f"got {type(dist).__name__}"
    )


class LatentEIG:
    """EDDI's information gain in latent space, from a Gaussian partial encoder.

    ``encoder(x, mask)`` maps ``[M, *data_shape]`` inputs to r(z | x_o) of batch ``[M]`` (a
    partial encoder, or a linear-Gaussian VAE's exact ``posterior``). ``target`` is a bool mask of
    ``data_shape`` marking the target's entries, or None.
    """

    decoded = "sample"  # the expectation is over x_i ~ p(x_i | x_o): draws, not means

    def __init__(self, encoder: Encoder, target: torch.Tensor | None = None) -> None:
        self.encoder, self.target = encoder, target

    def _r(self, x: torch.Tensor, mask: torch.Tensor, data_dims: int) -> Distribution:
        """r(z | x_o) for inputs ``[*lead, *data_shape]`` (mask broadcast to x), batch ``lead``."""
        lead, shape = x.shape[: x.dim() - data_dims], x.shape[x.dim() - data_dims :]
        return _gaussian(
            self.encoder(x.reshape(-1, *shape), mask.expand_as(x).reshape(-1, *shape)), tuple(lead)
        )

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor, candidates: Candidates
    ) -> torch.Tensor:
        b, n, c = x.shape[0], fill.shape[1], len(candidates)
        dims = x.dim() - 1
        if self.target is not None and bool((mask & self.target).any()):
            raise CondVAEError(
                "target: the target is already observed in some items; it cannot be designed for"
            )
        total = x.new_zeros(b, c)
        for part, some in _blocks(b, n, c * x[0].numel()):
            xs, m = fill[part, some], mask[part]
            shown = m[:, None, None] | candidates.masks[None, None]  # [b, 1, C, ...]
            wide = xs[:, :, None].expand(-1, -1, c, *xs.shape[2:])
            before = self._r(xs[:, :1, None], m[:, None, None], dims)  # the evidence alone: same for all n
            gain = kl_divergence(self._r(wide, shown, dims), before)
            if self.target is not None:
                after = self._r(wide, shown | self.target, dims)
                before = self._r(xs[:, :, None], (m | self.target)[:, None, None], dims)
                gain = gain - kl_divergence(after, before)
            total[part] += gain.sum(1)
        return total / n
