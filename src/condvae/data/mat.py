"""Readers for the MATLAB files of Frey faces and Olivetti faces (see shared/data/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from condvae.errors import DataError


def _load_variable(path: Path, name: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"path: MAT file {str(path)!r} does not exist")
    try:
        contents = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a bad file
        raise DataError(f"path: {str(path)!r} is not a readable MAT file ({exc})") from None
    if name not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise DataError(f"path: {str(path)!r} has no variable {name!r} (found {found})")
    return np.asarray(contents[name])


def read_frey(path: str | Path) -> np.ndarray:
    """Frey faces: variable ``ff`` (560, N) uint8, one 28x20 image per column -> (N, 28, 20)."""
    ff = _load_variable(Path(path), "ff")
    if ff.ndim != 2 or ff.shape[0] != 28 * 20:
        raise DataError(f"path: {str(path)!r}: 'ff' has shape {ff.shape}, expected (560, N)")
    return np.ascontiguousarray(ff.T.reshape(-1, 28, 20).astype(np.uint8))


def read_olivetti(path: str | Path) -> np.ndarray:
    """Olivetti faces: ``faces`` (4096, 400) uint8, column-major 64x64 -> upright (400, 64, 64)."""
    faces = _load_variable(Path(path), "faces")
    if faces.ndim != 2 or faces.shape[0] != 64 * 64:
        raise DataError(f"path: {str(path)!r}: 'faces' has shape {faces.shape}, expected (4096, N)")
    images = faces.T.reshape(-1, 64, 64).transpose(0, 2, 1)
    return np.ascontiguousarray(images.astype(np.uint8))
