"""Image grids as PNG files (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
