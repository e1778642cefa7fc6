"""Amortized conditioning: the IPA partial encoder r(z | x_o, m) (paper 000, design.md §4.3)."""

from condvae.partial.encoder import (
    FlatPartialEncoder,
    PartialEncoder,
    TopDownPartialEncoder,
    build_partial_encoder,
    fingerprint,
)
from condvae.partial.pretrained import bundled_encoders, load_partial_encoder, save_partial_encoder
from condvae.partial.train import PartialTrainConfig, train_partial_encoder

__all__ = [
    "FlatPartialEncoder",
    "PartialEncoder",
    "PartialTrainConfig",
    "TopDownPartialEncoder",
    "build_partial_encoder",
    "bundled_encoders",
    "fingerprint",
    "load_partial_encoder",
    "save_partial_encoder",
    "train_partial_encoder",
]
