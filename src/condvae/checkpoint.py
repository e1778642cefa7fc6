"""Saving and loading: pretrained directories and atomic training checkpoints.

A pretrained directory holds ``config.json`` (the model's constructor arguments plus a format
tag), ``model.safetensors`` (its tensors) and ``README.md`` (the model card). Nothing is ever
unpickled: safetensors stores raw tensors and a JSON header only, so loading a file from an
untrusted source cannot run code.

Training checkpoints are one safetensors file (model, optimiser moments, RNG states) whose
header metadata carries the JSON of the loop's counters. They are written to a temporary file
in the same folder, flushed to disk and renamed over the old one (``os.replace`` is atomic on
POSIX), so a kill at any moment leaves either the old checkpoint or the new one, never a torn
file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load_file, save_file

from condvae.errors import CheckpointError
from condvae.models import VAE, build_model

FORMAT = "condvae-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FILE_MODE = 0o644  # mkstemp's temp files are 0600; the renamed file should read like any other
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[str]:
    """Yield a temp file name beside ``path``; on success fsync it and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename."""
    with _atomic(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` made atomic (temp file in the same folder, then rename)."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with _atomic(path) as tmp:
        save_file(contiguous, tmp, metadata=metadata)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file and its metadata; corrupt or truncated files raise CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint: {str(path)!r} does not exist")
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} looks like a pickle file; condvae never unpickles "
            "(convert it with save_pretrained to config.json + model.safetensors)"
        )
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is corrupt, truncated or not a safetensors file ({exc})"
        ) from None
    return tensors, metadata


def _check_state(model: VAE, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint: {str(path)!r} does not match its config "
            f"(missing tensors {missing[:4]}, unexpected tensors {unexpected[:4]})"
        )
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"checkpoint: {str(path)!r} tensor {key!r} has shape {list(tensors[key].shape)}, "
                f"the config needs {list(value.shape)}"
            )
        if not torch.isfinite(tensors[key]).all():
            raise CheckpointError(f"checkpoint: {str(path)!r} tensor {key!r} contains NaN or inf")


def load_state(model: VAE, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy ``tensors`` into ``model`` after checking names, shapes and finiteness."""
    _check_state(model, tensors, path)
    model.load_state_dict(tensors)


def _cell(value: object) -> str:
    """A markdown table cell: pipes inside (as in KL(q || r)) would split it."""
    return str(value).replace("|", "\\|")


def render_card(config: dict[str, Any]) -> str:
    """A short model card from the ``card`` entry of the config (how trained, test scores)."""
    card = config.get("card", {})
    model = {k: v for k, v in config["model"].items()}
    lines = [f"# {card.get('name', 'condvae model')}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    lines += ["## Model", "", "```json", json.dumps(model), "```", ""]
    if card.get("usage"):
        lines += ["```python", card["usage"], "```", ""]
    if card.get("training"):
        lines += ["## Training", ""]
        lines += [f"- {k}: {v}" for k, v in card["training"].items()]
        lines.append("")
    if card.get("command"):
        lines += ["Command:", "", "```bash", card["command"], "```", ""]
    if card.get("metrics"):
        lines += ["## Test scores", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in card["metrics"].items()]
        lines.append("")
    if card.get("evaluation_command"):
        lines += ["Evaluation command:", "", "```bash", card["evaluation_command"], "```", ""]
    if card.get("machine"):
        lines += [f"Measured on: {card['machine']}.", ""]
    if card.get("notes"):
        lines += ["## Notes", "", card["notes"], ""]
    return "\n".join(lines)


def save_pretrained(model: VAE, directory: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a ``README.md`` model card."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config()}
    if card:
        config["card"] = card
    meta = {"format": FORMAT, "architecture": model.architecture}
    atomic_save_tensors(directory / WEIGHTS_FILE, model.state_dict(), meta)
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    atomic_write_bytes(directory / CARD_FILE, render_card(config).encode())
    return directory


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"model: {str(path)!r} not found (expected a directory from save_pretrained)")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"config: {str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or "model" not in config:
        raise CheckpointError(f"config: {str(path)!r} is not a condvae config (no format {FORMAT!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"config: {str(path)!r} has format_version {config['format_version']}, "
            f"this condvae reads up to {FORMAT_VERSION}; upgrade condvae"
        )
    return config


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Load a model saved by :func:`save_pretrained` (never unpickles)."""
    directory = Path(directory)
    if directory.is_file():
        raise CheckpointError(
            f"model: {str(directory)!r} is a file; pass the directory holding config.json "
            "and model.safetensors"
        )
    if not directory.is_dir():
        raise CheckpointError(f"model: directory {str(directory)!r} does not exist")
    config = read_config(directory)
    model = build_model(config["model"])
    tensors, metadata = read_tensors(directory / WEIGHTS_FILE)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint: {str(directory / WEIGHTS_FILE)!r} was not written by condvae "
            "(no condvae format tag in its header)"
        )
    if metadata.get("architecture") != model.architecture:
        raise CheckpointError(
            f"checkpoint: {str(directory / WEIGHTS_FILE)!r} holds a {metadata.get('architecture')!r} "
            f"model, config.json describes {model.architecture!r}"
        )
    load_state(model, tensors, directory / WEIGHTS_FILE)
    model.card = config.get("card", {})  # type: ignore[assignment]
    return model.to(device).eval()
