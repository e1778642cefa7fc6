"""Masks (True = observed) from short spec strings, one at a time or in seeded batches.

| spec                 | observed                                                          |
| -------------------- | ----------------------------------------------------------------- |
| ``random:P``         | each pixel independently with probability P                       |
| ``random``           | the same with a rate drawn uniformly from [0, 1] for each mask     |
| ``box:r0,c0,r1,c1``  | the rows r0..r1-1 and columns c0..c1-1                            |
| ``box``              | a random rectangle (each side uniform over the image)             |
| ``band:r0,r1``       | the rows r0..r1-1 (a horizontal band)                             |
| ``top-half`` ...     | ``top-half``, ``bottom-half``, ``left-half``, ``right-half``       |
| ``half``             | one of the four halves at random                                  |
| ``quadrant:tl``      | one quadrant (``tl``, ``tr``, ``bl``, ``br``); ``quadrant``: random |
| ``freeform``         | all but 1-4 random brush strokes (the free-form inpainting hole)   |
| ``glimpses``         | 0-12 random squares of side 2-8 pixels (what a sensor has seen)    |
| ``mixture``          | one of the random kinds above, or its complement, chosen at random |
| ``~SPEC``            | the complement of SPEC (e.g. ``~box:4,4,20,20`` hides a box)       |
| ``PATH.png``         | the white pixels of a PNG of the image's size                     |

The ``mixture`` is what partial encoders train on (as IPA does: Harvey et al. 2022): random
pixels at a uniform rate, rectangles, halves, quadrants and brush strokes, each kind shown as
itself or as its complement, so that the observed fraction spreads over all of [0, 1].
Feature vectors (data shape ``(D,)``) take the ``random`` kinds only; ``mixture`` is then
``random``. A mask covers every channel of a pixel alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from condvae.errors import CondVAEError
from condvae.guards import check_device

HALVES = ("top-half", "bottom-half", "left-half", "right-half")
QUADRANTS = ("tl", "tr", "bl", "br")
RANDOM_KINDS = ("random", "box", "half", "quadrant", "freeform", "glimpses")
MIXTURE_KINDS = ("random", "box", "~box", "half", "quadrant", "~quadrant", "freeform", "~freeform")


def _ints(text: str, count: int, spec: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise CondVAEError(f"mask: {spec!r} needs {count} comma-separated integers")
    return values


def make_mask(
    spec: str, data_shape: tuple[int, ...], seed: int = 0, device: str | torch.device | None = None
) -> torch.Tensor:
    """One bool mask of ``data_shape`` from ``spec`` (see the module table), seeded, on ``device``
    (default cpu). It is drawn on the CPU, so a seed gives the same mask on every device."""
    mask = _make_mask(spec, data_shape, seed)
    return mask if device is None else mask.to(check_device(device))


def _make_mask(spec: str, data_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    if spec.startswith("~"):
        return ~_make_mask(spec[1:], data_shape, seed)
    if spec in RANDOM_KINDS or spec == "mixture":
        return sample_masks(spec, 1, data_shape, torch.Generator().manual_seed(seed))[0]
    if spec.startswith("random:"):
        rate = _rate(spec)
        u = np.random.default_rng(seed).random(data_shape[-2:] if len(data_shape) == 3 else data_shape)
        return _expand(torch.from_numpy(u < rate), data_shape)
    height, width = _image_size(spec, data_shape)
    pixel = torch.zeros(height, width, dtype=torch.bool)
    if spec.startswith("box:"):
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
        pixel = _halves(height, width)[HALVES.index(spec)]
    elif spec.startswith("quadrant:"):
        which = spec.split(":", 1)[1]
        if which not in QUADRANTS:
            raise CondVAEError(f"mask: {spec!r}: expected quadrant:Q with Q one of {', '.join(QUADRANTS)}")
        pixel = _quadrants(height, width)[QUADRANTS.index(which)]
    elif spec.lower().endswith(".png"):
        pixel = load_mask_png(spec, (height, width))
    else:
        raise CondVAEError(
            f"mask: unknown spec {spec!r}; expected random:P, random, box:r0,c0,r1,c1, box, band:r0,r1, "
            f"{', '.join(HALVES)}, half, quadrant:Q, quadrant, freeform, mixture, ~SPEC or a PNG file"
        )
    return _expand(pixel, data_shape)


def sample_masks(
    spec: str,
    n: int,
    data_shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``n`` independent masks ``[n, *data_shape]`` of a random kind (``random``, ``box``,
    ``half``, ``quadrant``, ``freeform``, ``mixture``, ``random:P`` or ``~`` of one), drawn
    with the CPU ``generator`` (vectorised: this runs inside training loops) and returned on
    ``device`` (default cpu), so that a generator's draws are the same masks on every device."""
    masks = _sample_masks(spec, n, data_shape, generator)
    return masks if device is None else masks.to(check_device(device))


def _sample_masks(
    spec: str, n: int, data_shape: tuple[int, ...], generator: torch.Generator | None
) -> torch.Tensor:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CondVAEError(f"n: expected a non-negative number of masks, got {n!r}")
    if not isinstance(spec, str):
        raise CondVAEError(f"mask: expected a mask kind (str), got {type(spec).__name__}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if spec.startswith("~"):
        return ~_sample_masks(spec[1:], n, data_shape, gen)
    flat = len(data_shape) != 3
    size = tuple(data_shape) if flat else tuple(data_shape[-2:])
    if spec.startswith("random"):
        if spec == "random":
            rate = torch.rand(n, generator=gen)
        else:
            rate = torch.full((n,), _rate(spec))
        u = torch.rand(n, *size, generator=gen)
        pixel = u < rate.view(n, *([1] * len(size)))
        return pixel if flat else _expand(pixel, data_shape)
    if spec == "mixture" and flat:
        return sample_masks("random", n, data_shape, gen)
    if spec not in RANDOM_KINDS and spec != "mixture":
        raise CondVAEError(
            f"mask: {spec!r} is not a random kind; expected one of {', '.join(RANDOM_KINDS)}, "
            "mixture, random:P or ~ of one"
        )
    height, width = _image_size(spec, data_shape)
    if spec == "mixture":
        kind = torch.randint(len(MIXTURE_KINDS), (n,), generator=gen)
        out = torch.zeros(n, height, width, dtype=torch.bool)
        for k, name in enumerate(MIXTURE_KINDS):
            pick = (kind == k).nonzero().flatten()
            if len(pick):
                out[pick] = sample_masks(name, len(pick), (1, height, width), gen)[:, 0]
        return _expand(out, data_shape)
    if spec == "box":
        pixel = _random_boxes(n, height, width, gen)
    elif spec == "half":
        pixel = _halves(height, width)[torch.randint(4, (n,), generator=gen)]
    elif spec == "quadrant":
        pixel = _quadrants(height, width)[torch.randint(4, (n,), generator=gen)]
    elif spec == "glimpses":
        pixel = _glimpses(n, height, width, gen)
    else:
        pixel = ~_brush_strokes(n, height, width, gen)
    return _expand(pixel, data_shape)


def _rate(spec: str) -> float:
    try:
        rate = float(spec.split(":", 1)[1])
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise CondVAEError(f"mask: {spec!r}: expected random:P with P in [0, 1]")
    return rate


def _image_size(spec: str, data_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(data_shape) != 3:
        raise CondVAEError(
            f"mask: {spec!r} needs image-shaped data (C, H, W), got {tuple(data_shape)}; "
            "feature vectors take random:P, random or mixture"
        )
    return int(data_shape[1]), int(data_shape[2])


def _expand(pixel: torch.Tensor, data_shape: tuple[int, ...]) -> torch.Tensor:
    """[..., H, W] pixel masks to [..., C, H, W] (flat shapes pass through)."""
    if len(data_shape) != 3:
        return pixel
    return pixel.unsqueeze(-3).expand(*pixel.shape[:-2], *data_shape).clone()


def _halves(height: int, width: int) -> torch.Tensor:
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    return torch.stack([rows < height // 2, rows >= height // 2, cols < width // 2, cols >= width // 2])


def _quadrants(height: int, width: int) -> torch.Tensor:
    top, bottom, left, right = _halves(height, width)
    return torch.stack([top & left, top & right, bottom & left, bottom & right])


def _random_boxes(n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Rectangles whose corners are two uniform points (area anywhere from 1 pixel to all)."""
    r = torch.randint(height + 1, (n, 2), generator=gen).sort(1).values
    c = torch.randint(width + 1, (n, 2), generator=gen).sort(1).values
    r[:, 1] = torch.maximum(r[:, 1], r[:, 0] + 1).clamp_max(height)
    r[:, 0] = torch.minimum(r[:, 0], r[:, 1] - 1)
    c[:, 1] = torch.maximum(c[:, 1], c[:, 0] + 1).clamp_max(width)
    c[:, 0] = torch.minimum(c[:, 0], c[:, 1] - 1)
    rows, cols = torch.arange(height), torch.arange(width)
    in_rows = (rows >= r[:, :1]) & (rows < r[:, 1:])
    in_cols = (cols >= c[:, :1]) & (cols < c[:, 1:])
    return in_rows[:, :, None] & in_cols[:, None, :]


def _glimpses(n: int, height: int, width: int, gen: torch.Generator, most: int = 12) -> torch.Tensor:
    """0-``most`` squares per mask, each of one side in 2..8 (a third of the image at most), placed
    uniformly: the partial views a sequence of glimpses leaves, for training their classifier."""
    side = torch.randint(2, max(3, min(9, min(height, width) // 3 + 1)), (n, most, 1, 1), generator=gen)
    top = (torch.rand(n, most, 1, 1, generator=gen) * (height - side + 1)).long()
    left = (torch.rand(n, most, 1, 1, generator=gen) * (width - side + 1)).long()
    rows, cols = torch.arange(height).view(1, 1, -1, 1), torch.arange(width).view(1, 1, 1, -1)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    used = torch.arange(most).view(1, -1, 1, 1) < torch.randint(most + 1, (n, 1, 1, 1), generator=gen)
    return (inside & used).any(1)


def _brush_strokes(n: int, height: int, width: int, gen: torch.Generator, vertices: int = 5) -> torch.Tensor:
    """1-4 thick random-walk polylines per mask (the free-form holes of Yu et al. 2019)."""
    side = min(height, width)
    strokes = 4
    start = torch.rand(n, strokes, 1, 2, generator=gen) * torch.tensor([height, width])
    angle = torch.rand(n, strokes, vertices - 1, generator=gen) * 2 * math.pi
    length = (0.1 + 0.3 * torch.rand(n, strokes, vertices - 1, generator=gen)) * side
    steps = torch.stack([angle.sin(), angle.cos()], -1) * length[..., None]
    points = torch.cat([start, start + steps.cumsum(2)], 2)  # [n, S, V, 2]
    a, b = points[:, :, :-1], points[:, :, 1:]  # segment ends [n, S, V-1, 2]
    grid = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij"), -1)
    p = grid.reshape(1, 1, 1, -1, 2).float()  # [1, 1, 1, HW, 2]
    ab = (b - a).unsqueeze(3)
    t = (((p - a.unsqueeze(3)) * ab).sum(-1) / ab.pow(2).sum(-1).clamp_min(1e-9)).clamp(0, 1)
    dist = (p - a.unsqueeze(3) - t.unsqueeze(-1) * ab).norm(dim=-1)  # [n, S, V-1, HW]
    radius = (0.03 + 0.07 * torch.rand(n, strokes, 1, 1, generator=gen)) * side
    used = torch.arange(strokes) < torch.randint(1, strokes + 1, (n, 1), generator=gen)  # [n, S]
    hit = ((dist <= radius).any(2) & used[..., None]).any(1)
    return hit.reshape(n, height, width)


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
