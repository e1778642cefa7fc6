"""The partial-encoder kind of artifact: bundled in ``condvae/pretrained/encoders/<name>``.

Its config also records the VAE it was trained for ({"vae": {"name", "fingerprint"}}); loading
needs that VAE (the network's shape is derived from it) and refuses any other.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from condvae import store
from condvae.models import VAE
from condvae.partial.encoder import PartialEncoder, build_partial_encoder


def _build(config: dict[str, Any], vae: VAE) -> PartialEncoder:
    model = config["model"]
    encoder = build_partial_encoder(vae, model.get("covariance", "diagonal"), model.get("hidden"))
    encoder.vae_name = config["vae"].get("name", "?")
    encoder.vae_fingerprint = config["vae"].get("fingerprint", "?")
    return encoder


def _entries(encoder: PartialEncoder) -> dict[str, Any]:
    return {
        "encoder": encoder.config(),
        "vae": {"name": encoder.vae_name, "fingerprint": encoder.vae_fingerprint},
        "model": {"architecture": f"partial-encoder ({encoder.kind})", **encoder.config()},
    }


ENCODERS = store.register(
    store.Kind(
        key="encoder",
        title="partial encoder",
        format="condvae-partial-encoder",
        folder="encoders",
        cls=PartialEncoder,
        build=_build,
        loader="condvae.partial.load_partial_encoder",
        entries=_entries,
        header=lambda encoder: {"vae_fingerprint": encoder.vae_fingerprint},
        check=PartialEncoder.check_vae,
        describe=lambda c: f"for {c['vae'].get('name')}, objective {c.get('card', {}).get('objective')}",
    )
)
save_partial_encoder = store.save_pretrained

_LOADED: dict[tuple[str, int, str, str], PartialEncoder] = {}


def load_partial_encoder(
    name: str | Path, vae: VAE, device: str | torch.device | None = None
) -> PartialEncoder:
    """Load a partial encoder for ``vae``; refused (naming both) if it was trained for another.

    Loaded encoders are kept (keyed by file, its modification time, the VAE and the device), so
    conditioning by name in a loop reads the file once.
    """
    directory = store.resolve(ENCODERS, name)
    weights = directory / store.WEIGHTS_FILE
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    key = (str(directory.resolve()), stamp, store.fingerprint(vae), str(device or vae.device))
    if key not in _LOADED:
        _LOADED.clear()  # one at a time: a cache, not a registry
        _LOADED[key] = store.load(ENCODERS, directory, device or vae.device, vae)
    return _LOADED[key]


def find_bundled(vae: VAE, objective: str = "forward") -> str | None:
    """The bundled partial encoder trained for ``vae`` with ``objective``, if any."""
    found = store.fingerprint(vae)
    for name, fingerprint, trained_with in _bundled_index(tuple(store.bundled(ENCODERS))):
        if fingerprint == found and trained_with == objective:
            return name
    return None


@functools.lru_cache(maxsize=4)
def _bundled_index(names: tuple[str, ...]) -> list[tuple[str, str | None, str | None]]:
    """(name, VAE fingerprint, objective) of each bundled encoder: read once per set of names,
    since a server asks for every request and the package's files do not change under it."""
    index = []
    for name in names:
        config = store.read_config(ENCODERS, name)
        index.append((name, config["vae"].get("fingerprint"), config.get("card", {}).get("objective")))
    return index
