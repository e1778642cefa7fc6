"""Bundled pyramid models (``condvae/pretrained/pyramids/<name>``) and loading by name or path.

Pyramids are written by ``save_pretrained`` like any model; they live in their own folder so
that the per-query conditioning zoo (``condvae.zoo``) lists VAEs only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from condvae.checkpoint import CONFIG_FILE, from_pretrained, read_config
from condvae.errors import CondVAEError
from condvae.pyramid.model import PyramidVAE
from condvae.zoo import PRETRAINED_DIR

PYRAMIDS_DIR = PRETRAINED_DIR / "pyramids"


def bundled_pyramids() -> list[str]:
    if not PYRAMIDS_DIR.is_dir():
        return []
    return sorted(p.name for p in PYRAMIDS_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def load_pyramid(name: str, device: str | torch.device = "cpu") -> PyramidVAE:
    """A bundled pyramid by ``name`` or a directory written by ``save_pretrained``."""
    path = PYRAMIDS_DIR / name if name in bundled_pyramids() else Path(name).expanduser()
    if not path.exists():
        raise CondVAEError(
            f"model: unknown pyramid {name!r}; bundled pyramids are {bundled_pyramids()}, "
            "or pass a directory written by save_pretrained"
        )
    architecture = read_config(path)["model"].get("architecture")
    if architecture != PyramidVAE.architecture:
        raise CondVAEError(
            f"model: {name!r} is a {architecture!r} model, not a Laplacian pyramid; "
            f"bundled pyramids are {bundled_pyramids()}"
        )
    model = from_pretrained(path, device=device)
    assert isinstance(model, PyramidVAE)
    model.card = read_config(path).get("card", {})
    return model


def describe_bundled_pyramids() -> str:
    lines = []
    for name in bundled_pyramids():
        config = read_config(PYRAMIDS_DIR / name)
        model, metrics = config["model"], config.get("card", {}).get("metrics", {})
        shown = ", ".join(f"{k} {v}" for k, v in metrics.items())
        lines.append(
            f"{name}: {model['levels'] + 1}-level pyramid, data {model['data_shape']}, "
            f"coarse {model['coarse']['architecture']}; {shown}"
        )
    return "\n".join(lines) if lines else "no bundled pyramids"
