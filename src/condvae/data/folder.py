"""Any folder of PNG/JPEG images, resized (shorter side) and centre-cropped to one size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from condvae.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_image(path: str | Path, size: tuple[int, int], channels: int = 1) -> np.ndarray:
    """One image as uint8 ``[channels, H, W]``: shorter side scaled to fit, then centre crop."""
    if channels not in (1, 3):
        raise DataError(f"channels: expected 1 (grey) or 3 (RGB), got {channels}")
    height, width = size
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            scale = max(height / img.height, width / img.width)
            new = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
            img = img.resize(new, Image.Resampling.BILINEAR)
            left, top = (new[0] - width) // 2, (new[1] - height) // 2
            img = img.crop((left, top, left + width, top + height))
            array = np.array(img, dtype=np.uint8)  # a writable copy
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"path: {str(path)!r} is not a readable image ({exc})") from None
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def read_image_folder(root: str | Path, size: tuple[int, int], channels: int = 1) -> np.ndarray:
    """All PNG/JPEG files below ``root`` (sorted by path) as uint8 ``[N, channels, H, W]``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"path: image folder {str(root)!r} does not exist")
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"size: expected (height, width) of positive ints, got {size}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"path: no .png/.jpg/.jpeg images found below {str(root)!r}")
    return np.stack([load_image(p, size, channels) for p in files])
