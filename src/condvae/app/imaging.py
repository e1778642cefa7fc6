"""Pictures in and out of the API: base64 PNG/JPEG -> a checked tensor, tensors -> PNG data URLs."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import struct
import zlib

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from condvae.errors import CondVAEError

FORMATS = ("PNG", "JPEG")


def _bytes(data: str, argument: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise CondVAEError(f"{argument}: expected a base64 PNG or JPEG (optionally a data: URL)")
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if ";base64" not in head:
            raise CondVAEError(f"{argument}: a data: URL must be base64-encoded")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise CondVAEError(f"{argument}: not valid base64") from None


def decode_image(
    data: str, shape: tuple[int, int, int], max_side: int, argument: str = "image"
) -> tuple[torch.Tensor, str | None]:
    """A PNG or JPEG as a ``shape`` (C, H, W) tensor in [0, 1] and, where it was changed to fit
    the model, a note saying how (centre-cropped to the model's aspect, resized)."""
    raw = _bytes(data, argument)
    try:
        img = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError):
        raise CondVAEError(f"{argument}: not a PNG or JPEG image") from None
    if img.format not in FORMATS:
        raise CondVAEError(f"{argument}: expected PNG or JPEG, got {img.format}")
    w, h = img.size
    if max(w, h) > max_side:  # checked on the header, before decoding the pixels
        raise CondVAEError(f"{argument}: {w}x{h} is larger than the {max_side}x{max_side} this server takes")
    channels, height, width = shape
    try:
        img = img.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError) as err:
        raise CondVAEError(f"{argument}: the image could not be decoded ({err})") from None
    note = None
    if (w, h) != (width, height):
        target = width / height
        if abs(w / h - target) > 1e-3:  # crop the centre to the model's aspect, never stretch
            cw, ch = (round(h * target), h) if w / h > target else (w, round(w / target))
            left, top = (w - cw) // 2, (h - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        img = img.resize((width, height), Image.Resampling.LANCZOS)
        note = f"{argument}: {w}x{h} was cropped to the model's aspect and resized to {width}x{height}"
    array = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if channels == 1 else tensor.permute(2, 0, 1)
    return tensor.contiguous(), note


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(image: torch.Tensor) -> str:
    """A ``[C, H, W]`` tensor in [0, 1] (C = 1 or 3) as a PNG data URL.

    Written directly (8-bit grey or RGB, no row filters, zlib level 1): an answer holds a dozen
    small pictures, and Pillow's per-picture overhead (about 0.25 ms) was most of an ``ipa``
    request's time; this takes a tenth of that. Pillow reads them back in the tests.
    """
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    channels, height, width = array.shape
    pixels = array[0] if channels == 1 else array.transpose(1, 2, 0)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    data += _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + _chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@functools.cache
def _palette(cmap: str) -> np.ndarray:
    """A colour map as a 256 x 3 table, looked up once (calling matplotlib per picture is slow)."""
    from matplotlib import colormaps

    return colormaps[cmap](np.linspace(0, 1, 256))[:, :3].astype(np.float32)


def heat(values: torch.Tensor, vmax: float | None = None, cmap: str = "magma") -> tuple[str, float]:
    """A ``[H, W]`` map of non-negative values coloured by ``cmap`` (0 -> dark, ``vmax`` -> light)
    as a PNG data URL, and the ``vmax`` used (default: the map's maximum)."""
    values = values.detach().float().cpu()
    top = float(values.max()) if vmax is None else vmax
    scaled = (values / top).clamp(0, 1) if top > 0 else torch.zeros_like(values)
    rgb = _palette(cmap)[(scaled.numpy() * 255).round().astype(np.int64)]
    return png(torch.from_numpy(rgb).permute(2, 0, 1)), top


def evidence_overlay(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The evidence as a colour picture: observed pixels as they are, unobserved ones a muted teal,
    so that what the model saw is plain at a glance."""
    rgb = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    seen = mask.any(0, keepdim=True).expand(3, -1, -1)
    hidden = torch.tensor([0.13, 0.33, 0.38])[:, None, None].expand_as(rgb)
    return torch.where(seen, rgb, hidden)
