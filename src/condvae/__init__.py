"""condvae: condition pretrained VAEs on arbitrary evidence, without retraining them."""

from condvae.checkpoint import from_pretrained, save_pretrained
from condvae.conditioning import METHODS, Posterior, condition
from condvae.errors import CheckpointError, CondVAEError, DataError
from condvae.models import MLPVAE, VAE, ConvVAE, LinearGaussianVAE, build_model, wrap

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
    "LinearGaussianVAE",
    "Posterior",
    "__version__",
    "build_model",
    "condition",
    "from_pretrained",
    "load",
    "save_pretrained",
    "wrap",
]
