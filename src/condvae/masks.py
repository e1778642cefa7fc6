"""Masks from short spec strings (True = observed), as the CLI takes them.

| spec                | observed                                                    |
| ------------------- | ----------------------------------------------------------- |
| ``random:P``        | each pixel independently with probability P (seeded)        |
| ``box:r0,c0,r1,c1`` | the rows r0..r1-1 and columns c0..c1-1                      |
| ``top-half`` ...    | ``top-half``, ``bottom-half``, ``left-half``, ``right-half`` |
| ``band:r0,r1``      | the rows r0..r1-1 (a horizontal band)                       |
| ``PATH.png``        | the white pixels of a PNG of the image's size               |

A mask covers every channel of a pixel alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from condvae.errors import CondVAEError

HALVES = ("top-half", "bottom-half", "left-half", "right-half")


def _ints(text: str, count: int, spec: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise CondVAEError(f"mask: {spec!r} needs {count} comma-separated integers")
    return values


def make_mask(spec: str, data_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A bool mask of ``data_shape`` (C, H, W) from ``spec`` (see the module table)."""
    if len(data_shape) != 3:
        raise CondVAEError(f"mask: spec masks need image-shaped data (C, H, W), got {data_shape}")
    channels, height, width = data_shape
    pixel = torch.zeros(height, width, dtype=torch.bool)
    if spec.startswith("random:"):
        try:
            rate = float(spec.split(":", 1)[1])
        except ValueError:
            rate = -1.0
        if not 0 <= rate <= 1:
            raise CondVAEError(f"mask: {spec!r}: expected random:P with P in [0, 1]")
        u = np.random.default_rng(seed).random((height, width))
        pixel = torch.from_numpy(u < rate)
    elif spec.startswith("box:"):
        r0, c0, r1, c1 = _ints(spec[4:], 4, spec)
        if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
            raise CondVAEError(f"mask: {spec!r} is outside the {height}x{width} image or empty")
        pixel[r0:r1, c0:c1] = True
    elif spec.startswith("band:"):
        r0, r1 = _ints(spec[5:], 2, spec)
        if not 0 <= r0 < r1 <= height:
            raise CondVAEError(f"mask: {spec!r} is outside the image's {height} rows or empty")
        pixel[r0:r1] = True
    elif spec in HALVES:
        half = {
            "top-half": (slice(0, height // 2), slice(None)),
            "bottom-half": (slice(height // 2, None), slice(None)),
            "left-half": (slice(None), slice(0, width // 2)),
            "right-half": (slice(None), slice(width // 2, None)),
        }[spec]
        pixel[half] = True
    elif spec.lower().endswith(".png"):
        pixel = load_mask_png(spec, (height, width))
    else:
        raise CondVAEError(
            f"mask: unknown spec {spec!r}; expected random:P, box:r0,c0,r1,c1, band:r0,r1, "
            f"{', '.join(HALVES)} or a PNG file"
        )
    return pixel.expand(channels, height, width).clone()


def load_mask_png(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """White (255) = observed, black (0) = unobserved; other values or sizes are refused."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise CondVAEError(f"mask: cannot read {str(path)!r} as an image ({exc})") from None
    if array.shape != tuple(size):
        raise CondVAEError(
            f"mask: {str(path)!r} is {array.shape[0]}x{array.shape[1]}, the image is {size[0]}x{size[1]}"
        )
    if not np.isin(array, (0, 255)).all():
        raise CondVAEError(f"mask: {str(path)!r} must be black (0) and white (255) only")
    return torch.from_numpy(array == 255)
