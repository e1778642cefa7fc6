"""Image grids as PNG files (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.backend_bases import RendererBase
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from condvae.errors import CondVAEError

GAP = 0.2  # width of the gap between header spans, in image widths


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (folders made as needed) and close it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def rows_figure(
    rows: Sequence[tuple[str, torch.Tensor]],
    scale: float = 1.0,
    headers: Sequence[tuple[str, int]] | None = None,
) -> Figure:
    """One labelled row per ``(title, images [N, C, H, W] in [0, 1])``. ``headers``, pairs of
    (name, number of columns), name consecutive column spans above the top row and set them apart
    with a small gap, so a reader sees which columns belong together without counting them."""
    n_cols = max(r[1].shape[0] for r in rows)
    spans = [count for _, count in headers] if headers else [n_cols]
    if sum(spans) != n_cols or min(spans) < 1:
        raise CondVAEError(f"headers: expected positive spans that add up to {n_cols} columns, got {spans}")
    ratios: list[float] = []  # gridspec column widths: the images, with a narrow gap between spans
    grid: list[int] = []  # the gridspec column of each image column
    for s, count in enumerate(spans):
        ratios += [GAP] if s else []
        grid += range(len(ratios), len(ratios) + count)
        ratios += [1.0] * count
    height, width = rows[0][1].shape[-2:]
    cell = 0.9 * scale * max(1.0, 28 / max(height, width))
    fig, grid_axes = plt.subplots(
        len(rows),
        len(ratios),
        figsize=(cell * sum(ratios) * width / height + 1.2, cell * len(rows) + (0.3 if headers else 0)),
        squeeze=False,
        gridspec_kw={"width_ratios": ratios},
    )
    for c in set(range(len(ratios))) - set(grid):
        for ax in grid_axes[:, c]:
            ax.remove()
    axes = grid_axes[:, grid]
    for r, (title, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= images.shape[0]:
                ax.axis("off")
                continue
            img = images[c].detach().cpu().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
        axes[r][0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    first = 0
    for name, count in headers or []:
        _span_header(axes[0, first : first + count], name)
        first += count
    return fig


def _span_header(span: Sequence[plt.Axes], name: str) -> None:
    """``name`` centred above the axes ``span``. Placed at draw time, as the span's box is only
    known once ``tight_layout`` has moved the axes; kept out of the layout (a wide span's name
    would look like a wide decoration of its first axes) and given room by blank titles instead."""

    def box(renderer: RendererBase) -> Bbox:
        return Bbox.union([ax.get_window_extent(renderer) for ax in span])

    for ax in span:
        ax.set_title(" ", fontsize=9)
    header = span[0].annotate(
        name, (0.5, 1.0), xycoords=box, xytext=(0, 6), textcoords="offset points", ha="center", va="bottom"
    )
    header.set(fontsize=9, in_layout=False)


def save_rows(
    rows: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    scale: float = 1.0,
    headers: Sequence[tuple[str, int]] | None = None,
) -> Path:
    """:func:`rows_figure` saved as a PNG."""
    return save_figure(rows_figure(rows, scale, headers), path)


ORANGE = torch.tensor([1.0, 0.55, 0.0])
BLUE = torch.tensor([0.1, 0.35, 1.0])


def overlay_evidence(image: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RGB ``[3, H, W]``: a grey image with the evidence painted over it, as Wu et al. (2018) draw it:
    observed white (>= 0.5) in orange, observed black in blue."""
    grey = image.detach().cpu().float().clamp(0, 1)
    rgb = grey.expand(3, *grey.shape[-2:]).clone() if grey.shape[0] == 1 else grey.clone()
    observed = mask.detach().cpu().reshape(mask.shape[-3:]).any(0)
    bright = x.detach().cpu().reshape(x.shape[-3:]).mean(0) >= 0.5
    for colour, where in ((ORANGE, observed & bright), (BLUE, observed & ~bright)):
        rgb[:, where] = colour[:, None]
    return rgb


def completions_figure(
    x: torch.Tensor,
    mask: torch.Tensor,
    completions: torch.Tensor,
    truth: bool = True,
    labels: list[str] | None = None,
    groups: Sequence[str] | None = None,
) -> Figure:
    """One row per query: the evidence alone (unobserved in grey), the true image, then the
    completions [n, B, C, H, W] with the evidence painted over them. ``groups`` names consecutive
    equal-size groups of completions (e.g. one per method), shown as column headers, since which
    columns came from which method cannot otherwise be told from the picture."""
    n, batch = completions.shape[:2]
    headers = None
    if groups is not None:
        if not groups or n % len(groups):
            raise CondVAEError(
                f"groups: expected a number of names that divides the {n} completions, got {len(groups)}"
            )
        headers = [
            ("evidence", 1),
            *([("truth", 1)] if truth else []),
            *((g, n // len(groups)) for g in groups),
        ]
    rows = []
    for b in range(batch):
        evidence = overlay_evidence(torch.full_like(x[b], 0.5), x[b], mask[b])
        cells = [evidence]
        if truth:
            cells.append(overlay_evidence(x[b], x[b], torch.zeros_like(mask[b])))
        cells += [overlay_evidence(completions[i, b], x[b], mask[b]) for i in range(n)]
        rows.append((labels[b] if labels else f"query {b}", torch.stack(cells)))
    return rows_figure(rows, headers=headers)


def save_completions(
    x: torch.Tensor,
    mask: torch.Tensor,
    completions: torch.Tensor,
    path: str | Path,
    truth: bool = True,
    labels: list[str] | None = None,
    groups: Sequence[str] | None = None,
) -> Path:
    """:func:`completions_figure` saved as a PNG; feature vectors (tables) as
    :func:`feature_completions_figure`."""
    if x.dim() == 2:
        return save_figure(feature_completions_figure(x, mask, completions, labels, groups), path)
    return save_figure(completions_figure(x, mask, completions, truth, labels, groups), path)


def feature_completions_figure(
    x: torch.Tensor,
    mask: torch.Tensor,
    completions: torch.Tensor,
    labels: list[str] | None = None,
    groups: Sequence[str] | None = None,
) -> plt.Figure:
    """Feature vectors ``x`` [B, D] (a table's rows in the model's space): one panel per query
    with, per feature, the truth (black bar), the evidence (shaded column) and the completions
    [n, B, D] as dots, coloured by group (consecutive equal blocks of the n, e.g. methods)."""
    n, batch, dims = completions.shape
    names = list(groups) if groups else [""]
    if n % len(names):
        raise CondVAEError(
            f"groups: expected a number of names that divides the {n} completions, got {len(names)}"
        )
    per = n // len(names)
    fig, axes = plt.subplots(batch, 1, figsize=(max(5.0, 0.45 * dims + 1.5), 2.2 * batch), squeeze=False)
    features = torch.arange(dims, dtype=torch.float32)
    for b in range(batch):
        ax = axes[b][0]
        for j in mask[b].nonzero().flatten().tolist():
            ax.axvspan(j - 0.5, j + 0.5, color="orange", alpha=0.25, lw=0)
        for g, name in enumerate(names):
            block = completions[g * per : (g + 1) * per, b].detach().cpu()
            offset = (g - (len(names) - 1) / 2) * 0.6 / max(1, len(names))
            xs = (features + offset).expand(per, dims)
            ax.scatter(xs.flatten(), block.flatten(), s=8, alpha=0.6, label=name or None)
        ax.scatter(features, x[b].detach().cpu(), marker="_", s=200, color="black", label="truth")
        ax.set_xticks(range(dims))
        ax.set_ylabel(labels[b] if labels else f"query {b}", fontsize=9)
        if b == 0:
            ax.legend(fontsize=7, ncol=len(names) + 1, loc="upper right")
            ax.set_title("evidence shaded; truth black; completions as dots", fontsize=9)
    axes[-1][0].set_xlabel("feature")
    return fig
