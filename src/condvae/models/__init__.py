"""The VAE zoo behind one protocol (``prior``, ``encode(x)``, ``decode(z)``) and a registry."""

from __future__ import annotations

from typing import Any

from condvae.errors import CheckpointError, CondVAEError
from condvae.models.adapter import WrappedVAE, wrap
from condvae.models.base import VAE, diagonal_normal
from condvae.models.conv import ConvVAE
from condvae.models.hierarchical import HierarchicalVAE, TopDownGaussian
from condvae.models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    DiscretizedLogistic,
    GaussianLikelihood,
    Likelihood,
    LogisticLikelihood,
)
from condvae.models.linear_gaussian import LinearGaussianVAE
from condvae.models.mlp import MLPVAE
from condvae.models.tabular import TabularDistribution, TabularLikelihood, TabularVAE

ARCHITECTURES: dict[str, type[VAE]] = {
    cls.architecture: cls
    for cls in (MLPVAE, ConvVAE, LinearGaussianVAE, HierarchicalVAE, TabularVAE, WrappedVAE)
}


def build_model(config: dict[str, Any]) -> VAE:
    """Rebuild a VAE from its ``config()`` (as stored in ``config.json``)."""
    config = dict(config)
    arch = config.pop("architecture", None)
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"config: unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}"
        )
    if "data_shape" in config:
        config["data_shape"] = tuple(config["data_shape"])
    try:
        return ARCHITECTURES[arch](**config)
    except TypeError as exc:
        raise CheckpointError(f"config: invalid settings for architecture {arch!r} ({exc})") from None
    except CondVAEError as exc:
        raise CheckpointError(f"config: {exc}") from None


__all__ = [
    "ARCHITECTURES",
    "LIKELIHOODS",
    "MLPVAE",
    "VAE",
    "BernoulliLikelihood",
    "ConvVAE",
    "DiscretizedLogistic",
    "GaussianLikelihood",
    "HierarchicalVAE",
    "Likelihood",
    "LinearGaussianVAE",
    "LogisticLikelihood",
    "TabularDistribution",
    "TabularLikelihood",
    "TabularVAE",
    "TopDownGaussian",
    "WrappedVAE",
    "build_model",
    "diagonal_normal",
    "wrap",
]
