"""Bundled pretrained models, shipped inside the package and loadable by name.

Each lives in ``condvae/pretrained/<name>/`` as written by ``save_pretrained`` (config.json,
model.safetensors, README.md model card with the training command and test scores).
"""

from __future__ import annotations

from pathlib import Path

import torch

from condvae.checkpoint import CONFIG_FILE, from_pretrained, read_config
from condvae.errors import CondVAEError
from condvae.models import VAE

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def bundled_models() -> list[str]:
    """Names of the models shipped with the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def load(name: str, device: str | torch.device = "cpu") -> VAE:
    """A bundled model by ``name``, or a directory written by ``save_pretrained``."""
    if name in bundled_models():
        return from_pretrained(PRETRAINED_DIR / name, device=device)
    path = Path(name).expanduser()
    if path.exists():
        return from_pretrained(path, device=device)
    raise CondVAEError(
        f"model: unknown model name {name!r}; bundled models are {bundled_models()}, "
        "or pass a directory holding config.json and model.safetensors"
    )


def describe_bundled() -> str:
    """One line per bundled model with its architecture and recorded test scores."""
    lines = []
    for name in bundled_models():
        config = read_config(PRETRAINED_DIR / name)
        model = config["model"]
        metrics = config.get("card", {}).get("metrics", {})
        shown = ", ".join(f"{k} {v}" for k, v in metrics.items())
        latent = model.get("latent_dim") or f"{sum(model['groups'])} in groups {model['groups']}"
        lines.append(
            f"{name}: {model['architecture']} {model['likelihood'] if 'likelihood' in model else ''} "
            f"latent {latent}, data {model['data_shape']}; {shown}"
        )
    return "\n".join(lines) if lines else "no bundled models"
