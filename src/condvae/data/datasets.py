"""Named datasets with fixed, documented train / valid / test splits.

| name          | image   | train                  | valid                   | test              |
| ------------- | ------- | ---------------------- | ----------------------- | ----------------- |
| mnist         | 1x28x28 | official train[:55000] | official train[55000:]  | official t10k     |
| fashion_mnist | 1x28x28 | official train[:55000] | official train[55000:]  | official t10k     |
| frey          | 1x28x20 | the rest (1565)        | 200, seeded permutation | 200, seeded perm. |
| olivetti      | 1x64x64 | subjects 0-29 (300)    | subjects 30-34 (50)     | subjects 35-39    |
| folder:PATH   | as asked| the rest               | 10%, seeded permutation | 10%, seeded perm. |

Pixels are returned as float32 in [0, 1] (uint8 / 255), shape ``[N, C, H, W]``. Frey's
permutation is ``numpy.random.default_rng(0).permutation(1965)``: test = first 200, valid =
next 200. Olivetti is split by subject so that no face in the test split is seen in training.
For IDX files of another size n, the last n // 12 training images are the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from condvae.data.folder import read_image_folder
from condvae.data.idx import read_idx
from condvae.data.mat import read_frey, read_olivetti
from condvae.data.paths import resolve_data_dir
from condvae.errors import DataError

SPLITS = ("train", "valid", "test")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DATA_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "frey": (1, 28, 20),
    "olivetti": (1, 64, 64),
}
VALID_FRACTION = 12  # 1/12 of the official training set (5000 of 60000) is held out


def _n_train(n: int) -> int:
    return n - n // VALID_FRACTION


@dataclass
class ImageData:
    """Images ``x`` in [0, 1], ``[N, C, H, W]`` float32, with integer labels where known."""

    x: torch.Tensor
    labels: torch.Tensor | None
    name: str
    split: str

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def _find(root: Path, subdir: str, filename: str) -> Path:
    path = root / subdir / filename
    if not path.is_file():
        raise DataError(
            f"data_dir: {filename} not found in {str(root / subdir)!r} "
            f"(expected the layout of shared/data: <data_dir>/{subdir}/{filename})"
        )
    return path


def _idx_split(root: Path, subdir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    part = "test" if split == "test" else "train"
    images = read_idx(_find(root, subdir, IDX_FILES[part][0]))
    labels = read_idx(_find(root, subdir, IDX_FILES[part][1]))
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DataError(f"data_dir: {subdir} images {images.shape} and labels {labels.shape} disagree")
    cut = _n_train(len(images))
    if split == "train":
        return images[:cut], labels[:cut]
    if split == "valid":
        return images[cut:], labels[cut:]
    return images, labels


def _permuted_split(n: int, split: str, n_test: int, n_valid: int) -> np.ndarray:
    order = np.random.default_rng(0).permutation(n)
    if split == "test":
        return np.sort(order[:n_test])
    if split == "valid":
        return np.sort(order[n_test : n_test + n_valid])
    return np.sort(order[n_test + n_valid :])


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    size: tuple[int, int] | None = None,
    channels: int = 1,
) -> ImageData:
    """Load ``split`` of dataset ``name`` (see the module table); pixels in [0, 1].

    ``name`` may be ``folder:PATH`` for any folder of images, then ``size`` (H, W) is required.
    """
    if split not in SPLITS:
        raise DataError(f"split: expected one of {SPLITS}, got {split!r}")
    labels: np.ndarray | None = None
    if name.startswith("folder:"):
        if size is None:
            raise DataError("size: a folder dataset needs an image size (height, width)")
        images = read_image_folder(name.split(":", 1)[1], size, channels)
        n = len(images)
        n_held = max(1, n // 10) if n >= 3 else 0
        images = images[_permuted_split(n, split, n_held, n_held)]
    elif name in ("mnist", "fashion_mnist"):
        images, labels = _idx_split(resolve_data_dir(data_dir), name, split)
    elif name == "frey":
        faces = read_frey(_find(resolve_data_dir(data_dir), "frey_faces", "frey_rawface.mat"))
        images = faces[_permuted_split(len(faces), split, 200, 200)]
    elif name == "olivetti":
        root = resolve_data_dir(data_dir)
        faces = read_olivetti(_find(root, "olivetti_faces", "olivettifaces.mat"))
        subject = np.arange(len(faces)) // 10
        keep = {
            "train": subject < 30,
            "valid": (subject >= 30) & (subject < 35),
            "test": subject >= 35,
        }
        images, labels = faces[keep[split]], subject[keep[split]]
    else:
        known = [*DATA_SHAPES, "folder:PATH"]
        raise DataError(f"dataset: unknown dataset {name!r}; expected one of {known}")
    if images.ndim == 3:
        images = images[:, None]
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        raise DataError(
            f"size: dataset {name!r} has {images.shape[-2]}x{images.shape[-1]} images, "
            f"asked for {size[0]}x{size[1]}"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    return ImageData(x=x, labels=y, name=name, split=split)
