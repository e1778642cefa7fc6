"""Amortized conditioning: the IPA partial encoder r(z | x_o, m), its training and its store kind."""

from condvae.partial import auto, ipa, semi, sir  # noqa: F401  (registers the amortized methods)
from condvae.partial.encoder import (
    FlatPartialEncoder,
    PartialEncoder,
    TopDownPartialEncoder,
    build_partial_encoder,
)
from condvae.partial.pretrained import ENCODERS, find_bundled, load_partial_encoder, save_partial_encoder
from condvae.partial.train import PartialTrainConfig, train_partial_encoder
from condvae.store import fingerprint

__all__ = [
    "ENCODERS",
    "FlatPartialEncoder",
    "PartialEncoder",
    "PartialTrainConfig",
    "TopDownPartialEncoder",
    "build_partial_encoder",
    "find_bundled",
    "fingerprint",
    "load_partial_encoder",
    "save_partial_encoder",
    "train_partial_encoder",
]
