"""condvae: condition pretrained VAEs on arbitrary evidence, without retraining them."""

from condvae import design
from condvae.classifier import load_classifier, load_partial_classifier
from condvae.conditioning import METHODS, Posterior, condition
from condvae.data.tables import Table, load_table
from condvae.errors import CheckpointError, ConditioningWarning, CondVAEError, DataError, MemoryLimitError
from condvae.guards import memory_limit, set_memory_limit
from condvae.masks import make_mask, sample_masks
from condvae.models import (
    MLPVAE,
    VAE,
    ConvVAE,
    HierarchicalVAE,
    LinearGaussianVAE,
    TabularVAE,
    build_model,
    wrap,
)
from condvae.models.precision import mixed_precision
from condvae.partial import PartialTrainConfig, load_partial_encoder, train_partial_encoder
from condvae.pyramid import PyramidVAE, load_pyramid
from condvae.store import describe, from_pretrained, save_pretrained
from condvae.train import TrainResult, train_vae

__version__ = "0.1.0"

load = from_pretrained  # a bundled name (see ``condvae models``) or a pretrained directory


def __getattr__(name: str) -> object:
    """``condvae.CondVAEImputer`` on first use: it imports scikit-learn, which the rest does not need."""
    if name == "CondVAEImputer":
        from condvae.impute import CondVAEImputer

        return CondVAEImputer
    raise AttributeError(f"module 'condvae' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "MLPVAE",
    "VAE",
    "CheckpointError",
    "CondVAEError",
    "CondVAEImputer",
    "ConditioningWarning",
    "ConvVAE",
    "DataError",
    "HierarchicalVAE",
    "LinearGaussianVAE",
    "MemoryLimitError",
    "PartialTrainConfig",
    "Posterior",
    "PyramidVAE",
    "Table",
    "TabularVAE",
    "TrainResult",
    "__version__",
    "build_model",
    "condition",
    "describe",
    "design",
    "from_pretrained",
    "load",
    "load_classifier",
    "load_partial_classifier",
    "load_partial_encoder",
    "load_pyramid",
    "load_table",
    "make_mask",
    "memory_limit",
    "mixed_precision",
    "sample_masks",
    "save_pretrained",
    "set_memory_limit",
    "train_partial_encoder",
    "train_vae",
    "wrap",
]
