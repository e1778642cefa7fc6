"""condvae: condition pretrained VAEs on arbitrary evidence, without retraining them."""

from condvae.classifier import load_classifier
from condvae.conditioning import METHODS, Posterior, condition
from condvae.errors import CheckpointError, CondVAEError, DataError
from condvae.masks import make_mask, sample_masks
from condvae.models import MLPVAE, VAE, ConvVAE, HierarchicalVAE, LinearGaussianVAE, build_model, wrap
from condvae.partial import PartialTrainConfig, load_partial_encoder, train_partial_encoder
from condvae.pyramid import PyramidVAE, load_pyramid
from condvae.store import describe, from_pretrained, save_pretrained

__version__ = "0.1.0"

load = from_pretrained  # a bundled name (see ``condvae models``) or a pretrained directory


__all__ = [
    "METHODS",
    "MLPVAE",
    "VAE",
    "CheckpointError",
    "CondVAEError",
    "ConvVAE",
    "DataError",
    "HierarchicalVAE",
    "LinearGaussianVAE",
    "PartialTrainConfig",
    "Posterior",
    "PyramidVAE",
    "__version__",
    "build_model",
    "condition",
    "describe",
    "from_pretrained",
    "load",
    "load_classifier",
    "load_partial_encoder",
    "load_pyramid",
    "make_mask",
    "sample_masks",
    "save_pretrained",
    "train_partial_encoder",
    "wrap",
]
