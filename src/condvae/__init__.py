"""condvae: condition pretrained VAEs on arbitrary evidence, without retraining them."""

from condvae.checkpoint import from_pretrained, save_pretrained
from condvae.conditioning import METHODS, Posterior, condition
from condvae.errors import CheckpointError, CondVAEError, DataError
from condvae.masks import make_mask, sample_masks
from condvae.models import MLPVAE, VAE, ConvVAE, HierarchicalVAE, LinearGaussianVAE, build_model, wrap
from condvae.partial import PartialTrainConfig, load_partial_encoder, train_partial_encoder

__version__ = "0.1.0"


def load(name: str, device: str = "cpu") -> VAE:
    """A bundled pretrained model by name (see ``condvae models``) or a pretrained directory."""
    from condvae.zoo import load as _load

    return _load(name, device=device)


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
    "__version__",
    "build_model",
    "condition",
    "from_pretrained",
    "load",
    "load_partial_encoder",
    "make_mask",
    "sample_masks",
    "save_pretrained",
    "train_partial_encoder",
    "wrap",
]
