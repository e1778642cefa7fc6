"""The pyramid kind of artifact: bundled in ``condvae/pretrained/pyramids/<name>``.

Pyramids share the VAE format tag and are told apart by their architecture, ``"pyramid"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from condvae.pyramid.model import PyramidVAE
from condvae.store import VAES, Kind, load, register


def _build(config: dict[str, Any], vae: None) -> PyramidVAE:
    args = {k: v for k, v in config["model"].items() if k != "architecture"}
    return PyramidVAE(**{**args, "data_shape": tuple(args["data_shape"])})


def _describe(config: dict[str, Any]) -> str:
    model = config["model"]
    coarse = model["coarse"]["architecture"]
    return f"{model['levels'] + 1}-level pyramid, data {model['data_shape']}, coarse {coarse}"


PYRAMIDS = register(
    Kind(
        key="pyramid",
        title="Laplacian pyramid",
        noun="pyramid",
        format=VAES.format,
        folder="pyramids",
        cls=PyramidVAE,
        build=_build,
        loader="condvae.pyramid.load_pyramid",
        architectures=(PyramidVAE.architecture,),
        header=lambda model: {"architecture": model.architecture},
        describe=_describe,
    )
)


def load_pyramid(name: str | Path, device: str | torch.device = "cpu") -> PyramidVAE:
    """A bundled pyramid by ``name`` or a directory written by ``save_pretrained``."""
    return load(PYRAMIDS, name, device)
