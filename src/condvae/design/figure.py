"""Pictures and text of a design run: the glimpse sequence with the EIG heat map and the
classifier's belief after each step (images); the features in the order chosen with their EIG and
the target's prediction (tables)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from condvae.design.greedy import DesignResult

UNSEEN = 0.5  # grey for what has not been observed yet


def _patch_box(result: DesignResult, c: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of candidate c's glimpse."""
    where = result.candidates.masks[c].any(0).nonzero()
    top, left = (int(v) for v in where.min(0).values)
    bottom, right = (int(v) for v in where.max(0).values)
    return top, left, bottom - top + 1, right - left + 1


def _heat(result: DesignResult, b: int, t: int) -> torch.Tensor:
    """Step t's EIG spread over the image: each pixel gets its candidate's gain (the larger
    where glimpses overlap)."""
    gains = result.gains[b, t].nan_to_num(0).cpu()
    masks = result.candidates.masks.any(1).cpu().float()  # [C, H, W]
    return (masks * gains[:, None, None]).amax(0)


def image_figure(
    result: DesignResult, b: int = 0, label: int | None = None, classes: list[str] | None = None
) -> plt.Figure:
    """Item b: per step, what has been seen (the chosen glimpse outlined), the EIG heat map that
    chose it and the classifier's belief after it."""
    steps = result.steps
    probs = result.predictions.get("probs")
    rows = 3 if probs is not None else 2
    fig, axes = plt.subplots(rows, steps + 1, figsize=(1.7 * (steps + 1), 1.8 * rows), squeeze=False)
    x = result.x[b].cpu()
    for t in range(steps + 1):
        seen = result.mask_after(t)[b].cpu()
        shown = torch.where(seen, x, torch.full_like(x, UNSEEN))
        ax = axes[0][t]
        ax.imshow(shown.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title("evidence" if t == 0 else f"after step {t}", fontsize=8)
        if t > 0:
            top, left, h, w = _patch_box(result, int(result.order[b, t - 1]))
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="red", lw=1.5))
        ax = axes[1][t]
        if t < steps and not bool(torch.isnan(result.gains[b, t]).all()):
            heat = _heat(result, b, t)
            ax.imshow(heat.numpy(), cmap="magma", vmin=0)
            top, left, h, w = _patch_box(result, int(result.order[b, t]))
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="cyan", lw=1.5))
            ax.set_title(f"EIG, max {float(heat.max()):.2f} nats", fontsize=8)
        elif t < steps:
            ax.set_title("no EIG (a baseline)", fontsize=8)
        else:
            ax.axis("off")
        if probs is not None:
            p = probs[b, t].cpu().numpy()
            ax = axes[2][t]
            colours = ["tab:green" if k == label else "tab:blue" for k in range(len(p))]
            ax.bar(range(len(p)), p, color=colours)
            ax.set_ylim(0, 1)
            ax.set_xticks(range(len(p)))
            ax.set_xticklabels(classes or [str(k) for k in range(len(p))], fontsize=6)
            ax.set_title(f"belief: {int(p.argmax())} ({float(p.max()):.2f})", fontsize=8)
    for row in axes[:2]:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    truth = f"; true class {label}" if label is not None else ""
    fig.suptitle(f"design with {result.strategy}{truth}", fontsize=9)
    return fig


def table_lines(result: DesignResult, b: int = 0, truth: float | None = None) -> list[str]:
    """Item b as text: one line per step with the feature chosen, its EIG and the prediction."""
    lines = [f"strategy {result.strategy}" + (f"; true target {truth:g}" if truth is not None else "")]
    for t in range(result.steps + 1):
        head = (
            "before any feature"
            if t == 0
            else f"step {t}: {result.candidates.names[int(result.order[b, t - 1])]}"
        )
        if t > 0 and not math.isnan(float(result.gains[b, t - 1, int(result.order[b, t - 1])])):
            head += f" (EIG {float(result.gains[b, t - 1, int(result.order[b, t - 1])]):.3f} nats)"
        lines.append(f"{head:<60} {prediction_text(result, b, t)}")
    return lines


def prediction_text(result: DesignResult, b: int, t: int) -> str:
    pred = result.predictions
    if "target_probs" in pred:
        p = pred["target_probs"][b, t]
        shown = ", ".join(f"{v:.2f}" for v in p.tolist())
        return f"target {float(pred['target_class'][b, t]):g} (probabilities {shown})"
    if "target_mean" in pred:
        mean, low, high = (float(pred[k][b, t]) for k in ("target_mean", "target_low", "target_high"))
        return f"target {mean:.4g} [90%: {low:.4g}, {high:.4g}]"
    if "probs" in pred:
        p = pred["probs"][b, t]
        return f"class {int(p.argmax())} ({float(p.max()):.2f})"
    return ""


def table_figure(
    result: DesignResult, b: int = 0, truth: float | None = None, classes: list[float] | None = None
) -> plt.Figure:
    """Item b: the EIG of every feature at each step (chosen ones marked) and the prediction;
    ``classes``: a discrete target's values, in the order of its probabilities."""
    steps, names = result.steps, result.candidates.names
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.35 * len(names) + 2), 6.5))
    gains = result.gains[b].cpu()
    if not bool(torch.isnan(gains).all()):
        image = top.imshow(gains.nan_to_num(0).T.numpy(), aspect="auto", cmap="magma", vmin=0)
        fig.colorbar(image, ax=top, label="EIG (nats)")
    for t in range(steps):
        top.scatter([t], [int(result.order[b, t])], marker="o", facecolors="none", edgecolors="cyan", s=60)
    top.set_yticks(range(len(names)))
    top.set_yticklabels(names, fontsize=6)
    top.set_xticks(range(steps))
    top.set_xticklabels([f"step {t + 1}" for t in range(steps)], fontsize=7)
    top.set_title(f"{result.strategy}: EIG of each feature (circled: chosen)", fontsize=9)
    pred, ts = {k: v.cpu().numpy() for k, v in result.predictions.items()}, list(range(steps + 1))
    if "target_probs" in pred:
        for k in range(pred["target_probs"].shape[-1]):
            bottom.plot(ts, pred["target_probs"][b, :, k], marker="o", label=f"p(class {k})")
        bottom.set_ylim(0, 1)
    elif "target_mean" in pred:
        bottom.plot(ts, pred["target_mean"][b], marker="o", label="posterior mean")
        bottom.fill_between(
            ts, pred["target_low"][b], pred["target_high"][b], alpha=0.3, label="90% interval"
        )
    if truth is not None:
        bottom.axhline(truth, color="black", ls="--", label="truth")
    bottom.set_xticks(ts)
    bottom.set_xticklabels(
        ["none"] + [names[int(c)] for c in result.order[b]], rotation=30, ha="right", fontsize=7
    )
    bottom.set_title("the target's prediction after each feature", fontsize=9)
    bottom.legend(fontsize=7)
    return fig
