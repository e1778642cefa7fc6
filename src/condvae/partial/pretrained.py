"""Saving, loading and the bundled partial encoders (the format of condvae.checkpoint).

A directory holds ``config.json`` ({"format": "condvae-partial-encoder", "encoder": ...,
"vae": {"name", "fingerprint", "config"}, "card": ...}), ``model.safetensors`` and a
``README.md`` card. Loading needs the VAE (the network's shape is derived from it) and refuses
any VAE whose fingerprint differs from the one it was trained for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from condvae.checkpoint import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_bytes,
    read_tensors,
    render_card,
)
from condvae.errors import CheckpointError, CondVAEError
from condvae.models import VAE
from condvae.partial.encoder import PartialEncoder, build_partial_encoder, fingerprint
from condvae.zoo import PRETRAINED_DIR

FORMAT = "condvae-partial-encoder"
FORMAT_VERSION = 1
ENCODERS_DIR = PRETRAINED_DIR / "encoders"


def save_partial_encoder(
    encoder: PartialEncoder, directory: str | Path, card: dict[str, Any] | None = None
) -> Path:
    directory = Path(directory)
    card = dict(card or encoder.card)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": encoder.config(),
        "vae": {"name": encoder.vae_name, "fingerprint": encoder.vae_fingerprint},
        "model": {"architecture": f"partial-encoder ({encoder.kind})", **encoder.config()},
        "card": card,
    }
    meta = {"format": FORMAT, "vae_fingerprint": encoder.vae_fingerprint}
    atomic_save_tensors(directory / WEIGHTS_FILE, encoder.state_dict(), meta)
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    atomic_write_bytes(directory / CARD_FILE, render_card(config).encode())
    return directory


def bundled_encoders() -> list[str]:
    if not ENCODERS_DIR.is_dir():
        return []
    return sorted(p.name for p in ENCODERS_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"encoder: {str(path)!r} not found (expected a saved partial encoder directory)"
        )
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"encoder: {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f"encoder: {str(path)!r} is not a condvae partial encoder (no format {FORMAT!r})"
        )
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"encoder: {str(path)!r} needs a newer condvae (format_version {config['format_version']})"
        )
    return config


def resolve(name: str | Path) -> Path:
    """A bundled encoder's name or a directory."""
    if str(name) in bundled_encoders():
        return ENCODERS_DIR / str(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise CondVAEError(
        f"encoder: unknown partial encoder {str(name)!r}; bundled ones are {bundled_encoders()}, "
        "or pass a directory written by train-partial-encoder"
    )


_LOADED: dict[tuple[str, int, str, str], PartialEncoder] = {}


def load_partial_encoder(
    name: str | Path, vae: VAE, device: str | torch.device | None = None
) -> PartialEncoder:
    """Load a partial encoder for ``vae``; refused (naming both) if it was trained for another.

    Loaded encoders are kept (keyed by file, its modification time, the VAE and the device), so
    conditioning by name in a loop reads the file once.
    """
    directory = resolve(name)
    weights = directory / WEIGHTS_FILE
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    key = (str(directory.resolve()), stamp, fingerprint(vae), str(device or vae.device))
    if key not in _LOADED:
        _LOADED.clear()  # one at a time: a cache, not a registry
        _LOADED[key] = _load(directory, vae, device)
    return _LOADED[key]


def _load(directory: Path, vae: VAE, device: str | torch.device | None) -> PartialEncoder:
    config = _read_config(directory)
    stored = config.get("vae", {})
    encoder = build_partial_encoder(
        vae, config["encoder"].get("covariance", "diagonal"), config["encoder"].get("hidden")
    )
    encoder.card = config.get("card", {})
    encoder.card.setdefault("name", directory.name)
    encoder.vae_name, wanted = stored.get("name", "?"), stored.get("fingerprint", "?")
    if encoder.vae_fingerprint != wanted:
        encoder.vae_fingerprint = wanted
        encoder.check_vae(vae, where=str(directory))
    tensors, meta = read_tensors(directory / WEIGHTS_FILE)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"encoder: {str(directory / WEIGHTS_FILE)!r} was not written by condvae")
    expected = encoder.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != v.shape for k, v in expected.items()):
        raise CheckpointError(f"encoder: {str(directory / WEIGHTS_FILE)!r} does not match its config")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CheckpointError(f"encoder: {str(directory / WEIGHTS_FILE)!r} contains NaN or inf")
    encoder.load_state_dict(tensors)
    return encoder.to(device or vae.device).eval()


def find_bundled(vae: VAE, objective: str = "forward") -> str | None:
    """The bundled partial encoder trained for ``vae`` with ``objective``, if any."""
    found = fingerprint(vae)
    for name in bundled_encoders():
        config = _read_config(ENCODERS_DIR / name)
        if config["vae"].get("fingerprint") == found and config.get("card", {}).get("objective") == objective:
            return name
    return None


def describe_bundled_encoders() -> str:
    """One line per bundled partial encoder: its VAE, objective and recorded test scores."""
    lines = []
    for name in bundled_encoders():
        config = _read_config(ENCODERS_DIR / name)
        card = config.get("card", {})
        metrics = ", ".join(f"{k} {v}" for k, v in card.get("metrics", {}).items())
        lines.append(f"{name}: for {config['vae'].get('name')}, objective {card.get('objective')}; {metrics}")
    return "\n".join(lines) if lines else "no bundled partial encoders"
