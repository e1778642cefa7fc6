"""Atomic files: the training loop's checkpoints and the store's artifacts.

A file is written to a temporary file in the same folder, flushed to disk and renamed over the
old one (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the old file
or the new one, never a torn file. Tensors are read and written as safetensors only: raw
tensors and a JSON header, never unpickled.

A file the rename cannot protect (truncated by a full disk, a copy or a sync afterwards) would
still leave a run with nothing to resume, so a checkpoint is written with ``keep``: the complete
file it replaces stays beside it (``checkpoint.prev.safetensors``) until the next one is in
place. The rule, at every moment: the new file is complete on disk before the old one is moved,
and the old one is kept only if it is itself complete, so it never overwrites a good older one.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import safetensors
import torch
from safetensors.torch import load_file, save_file

from condvae.errors import CheckpointError

FILE_MODE = 0o644  # mkstemp's temp files are 0600; the renamed file should read like any other
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


@contextlib.contextmanager
def _atomic(path: Path, keep: Path | None = None) -> Iterator[str]:
    """Yield a temp file name beside ``path``; on success fsync it and rename it over ``path``.

    With ``keep``, the complete file at ``path`` becomes ``keep`` only after the new one is
    flushed, just before the rename, so a kill at any moment leaves a complete file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        if keep is not None:
            _keep(path, keep)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _complete(path: Path) -> bool:
    """Whether ``path`` is a whole safetensors file: its header parses and covers the file exactly."""
    try:
        with safetensors.safe_open(str(path), framework="pt"):
            return True
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError):
        return False


def _keep(path: Path, keep: Path) -> None:
    """Make the complete file at ``path`` also ``keep``; an incomplete or missing one is not kept.

    A hard link keeps ``path`` in place throughout (the rename that follows then gives ``path``
    the new file and leaves ``keep`` the old one); where links are unsupported (some network or
    FUSE file systems) the file is renamed, and for that instant only ``keep`` exists, which a
    resume accepts. A truncated ``path`` is never kept: it would replace a good older file.
    """
    if not _complete(path):
        return
    keep.unlink(missing_ok=True)  # until the link, the complete file at ``path`` is the fallback
    try:
        os.link(path, keep)
    except OSError:
        os.replace(path, keep)


def discard_temp_files(path: Path) -> list[Path]:
    """Delete the temp files a killed write to ``path`` left beside it; the paths deleted.

    Only for a folder no other process is writing to (a resumed run's own output folder): a
    temp file there is an unfinished write whose writer is gone.
    """
    if not path.parent.is_dir():
        return []
    prefix = _temp_prefix(path)
    stale = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    for stray in stale:
        stray.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename."""
    with _atomic(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str], keep: Path | None = None
) -> None:
    """``safetensors.torch.save_file`` made atomic (temp file in the same folder, then rename).

    With ``keep`` the complete file it replaces is kept there (see the module docstring).
    """
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with _atomic(path, keep) as tmp:
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
        reason = " ".join(str(exc).split())  # the error stays one line
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is corrupt, truncated or not a safetensors file ({reason})"
        ) from None
    return tensors, metadata


def header_metadata(path: Path) -> dict[str, str]:
    """The metadata in the header of a safetensors file, even a truncated one; {} if unreadable.

    Only to describe a file that ``read_tensors`` refused (a truncated checkpoint still names its
    step); never to load from one.
    """
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 100_000_000:  # safetensors' own limit on a header
                return {}
            header = json.loads(handle.read(size))
        metadata = header.get("__metadata__") or {}
        return {str(k): str(v) for k, v in metadata.items()}
    except (OSError, struct.error, ValueError, AttributeError):
        return {}
