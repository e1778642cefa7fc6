"""Shared fixtures: the real data folder (or a skip) and tiny synthetic datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from condvae.data import write_idx

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))  # tests import benchmark scripts (recipes, trainers) by name


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data`` beside the repository, or skip with the reason."""
    if not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real data not available: {SHARED_DATA} is missing (see DEVELOPERS.md)")
    return SHARED_DATA


def make_idx_dataset(root: Path, name: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write a fake MNIST-layout dataset: smooth random blobs, labels 0-9."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:28, 0:28]
    for part, n in (("train", n_train), ("t10k", n_test)):
        centres = rng.uniform(8, 20, size=(n, 2))
        images = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 20)
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", (255 * images).astype(np.uint8))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return root


@pytest.fixture
def synthetic_data(tmp_path: Path) -> Path:
    """A data folder with the layout of shared/data, all tiny and synthetic."""
    root = tmp_path / "data"
    make_idx_dataset(root, "mnist", 240, 40)
    make_idx_dataset(root, "fashion_mnist", 120, 20, seed=1)
    rng = np.random.default_rng(2)
    (root / "frey_faces").mkdir()
    ff = rng.integers(8, 239, size=(560, 1965), dtype=np.uint8)
    scipy.io.savemat(root / "frey_faces" / "frey_rawface.mat", {"ff": ff})
    (root / "olivetti_faces").mkdir()
    faces = rng.integers(0, 256, size=(4096, 400), dtype=np.uint8)
    scipy.io.savemat(root / "olivetti_faces" / "olivettifaces.mat", {"faces": faces})
    return root
