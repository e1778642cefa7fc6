"""Atomic files: the training loop's checkpoints and the store's artifacts.

A file is written to a temporary file in the same folder, flushed to disk and renamed over the
old one (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the old file
or the new one, never a torn file. Tensors are read and written as safetensors only: raw
tensors and a JSON header, never unpickled.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import safetensors
import torch
from safetensors.torch import load_file, save_file

from condvae.errors import CheckpointError

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
