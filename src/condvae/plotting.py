"""Image grids as PNG files (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def _save(fig: plt.Figure, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_rows(rows: Sequence[tuple[str, torch.Tensor]], path: str | Path, scale: float = 1.0) -> Path:
    """One labelled row per ``(title, images [N, C, H, W] in [0, 1])``; saved as a PNG."""
    n_cols = max(r[1].shape[0] for r in rows)
    height, width = rows[0][1].shape[-2:]
    cell = 0.9 * scale * max(1.0, 28 / max(height, width))
    fig, axes = plt.subplots(
        len(rows),
        n_cols,
        figsize=(cell * n_cols * width / height + 1.2, cell * len(rows)),
        squeeze=False,
    )
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
    return _save(fig, path)


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


def save_completions(
    x: torch.Tensor,
    mask: torch.Tensor,
    completions: torch.Tensor,
    path: str | Path,
    truth: bool = True,
    labels: list[str] | None = None,
) -> Path:
    """One row per query: the evidence alone (unobserved in grey), the true image, then the
    completions [n, B, C, H, W] with the evidence painted over them."""
    n, batch = completions.shape[:2]
    rows = []
    for b in range(batch):
        evidence = overlay_evidence(torch.full_like(x[b], 0.5), x[b], mask[b])
        cells = [evidence]
        if truth:
            cells.append(overlay_evidence(x[b], x[b], torch.zeros_like(mask[b])))
        cells += [overlay_evidence(completions[i, b], x[b], mask[b]) for i in range(n)]
        rows.append((labels[b] if labels else f"query {b}", torch.stack(cells)))
    return save_rows(rows, path)
