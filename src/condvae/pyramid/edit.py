"""Partial sampling and editing as PNG grids (``condvae pyramid sample|edit``).

A *painting* is a PNG standing for one Gaussian level of the pyramid (the coarse image, or any
finer level): greyscale (mode L or 1) for a grey model, RGB for a colour one, of exactly one of
the pyramid's sizes. Anything else is refused with a message naming the file, what it is and
what the model takes, so a user never meets a shape error from inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from condvae.errors import CondVAEError
from condvae.evaluate import load_query_image
from condvae.plotting import save_rows
from condvae.pyramid.laplacian import coarse_levels
from condvae.pyramid.model import PyramidVAE

GREY_MODES = ("L", "1")


def load_painting(path: str | Path, model: PyramidVAE) -> torch.Tensor:
    """The painting as ``[1, C, h, w]`` in [0, 1], checked against the model's modes and sizes."""
    sizes = model.level_sizes()
    shown = ", ".join(f"{h}x{w}" for h, w in sizes)
    grey = model.data_shape[0] == 1
    wanted = "greyscale (mode L)" if grey else "RGB (mode RGB)"
    try:
        with Image.open(path) as img:
            mode, size = img.mode, (img.height, img.width)
            if (grey and mode not in GREY_MODES) or (not grey and mode != "RGB"):
                raise CondVAEError(
                    f"painting: {str(path)!r} has mode {mode!r}; this model takes {wanted} PNGs "
                    f"(convert it, e.g. with PIL's Image.convert({'L' if grey else 'RGB'!r}))"
                )
            if size not in sizes:
                raise CondVAEError(
                    f"painting: {str(path)!r} is {size[0]}x{size[1]}; this model takes {shown} "
                    f"(the coarse image, a finer pyramid level or the full image)"
                )
            array = np.array(img.convert("L" if grey else "RGB"), dtype=np.float32) / 255
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise CondVAEError(f"painting: cannot read {str(path)!r} as an image ({exc})") from None
    tensor = torch.from_numpy(array)
    return (tensor[None] if grey else tensor.permute(2, 0, 1))[None]


def _full_size(image: torch.Tensor, model: PyramidVAE) -> torch.Tensor:
    """Nearest-neighbour enlargement to the model's size, for showing a coarse level."""
    return F.interpolate(image, size=model.data_shape[-2:], mode="nearest")


def sample_figure(
    model: PyramidVAE,
    out: str | Path,
    *,
    n: int = 8,
    image: str | None = None,
    keep: Sequence[int] = (1,),
    seed: int = 0,
    mean: bool = True,
    data_dir: str | None = None,
    temperature: float = 1.0,
) -> Path:
    """Without ``image``: a row of n samples. With it: one row per entry of ``keep`` showing the
    image's fixed coarse part (its ``keep`` coarsest pyramid entries), then n partial samples."""
    torch.manual_seed(seed)
    if image is None:
        return save_rows([("samples", model.sample(n, mean=mean, temperature=temperature)[:, 0])], out)
    x = load_query_image(model, image, data_dir).to(model.device)  # type: ignore[arg-type]
    pyr = model.pyramid(x)
    rows = [("image", x)]
    for k in keep:
        samples = model.sample(n, start=x, keep=k, mean=mean, temperature=temperature)[:, 0]
        rows.append((f"keep {k}", torch.cat([coarse_levels(pyr, k), samples])))
    return save_rows(rows, out)


def edit_figure(
    model: PyramidVAE,
    painting: str | Path,
    *,
    out: str | Path,
    n: int = 8,
    seed: int = 0,
    mean: bool = True,
    temperature: float = 1.0,
) -> Path:
    """The painting (enlarged) followed by n samples of fine detail conditioned on it."""
    torch.manual_seed(seed)
    paint = load_painting(painting, model).to(model.device)
    samples = model.edit(paint, n, mean=mean, temperature=temperature)[:, 0]
    return save_rows([("painting", _full_size(paint, model)), ("samples", samples)], out)
