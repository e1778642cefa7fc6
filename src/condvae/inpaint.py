"""Inpainting: one image, one mask, several methods; completions as a PNG and a metrics table.

For each method: the C-ELBO (methods with a density), the query log-likelihood of the true
hidden pixels log (1/n) sum p(y_true | z_n), its gap to the model's exact value
log p(y_true | x_o) (grid for a 2-d latent, closed form for the linear-Gaussian model, else a
large importance-sampling estimate), and the time to fit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from condvae.conditioning import METHODS, condition
from condvae.errors import CondVAEError
from condvae.evaluate import load_query_image
from condvae.masks import make_mask
from condvae.metrics import exact_query_log_likelihood
from condvae.models import VAE
from condvae.plotting import save_completions


def inpaint(
    model: VAE,
    image: str,
    mask: str,
    methods: list[str],
    samples: int = 16,
    out: str | Path = "inpaint.png",
    seed: int = 0,
    data_dir: str | None = None,
    options: dict[str, Any] | None = None,
    metric_samples: int = 500,
) -> list[dict[str, Any]]:
    """Complete ``image`` under ``mask`` with each of ``methods``; returns one row per method."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CondVAEError(f"method: unknown {unknown}; expected some of {sorted(METHODS)}")
    x = load_query_image(model, image, data_dir).to(model.device)
    m = make_mask(mask, model.data_shape, seed=seed)[None].to(model.device)
    exact = exact_query_log_likelihood(model, x, m)
    rows, grids = [], []
    for method in methods:
        started = time.perf_counter()
        post = condition(model, x, m, method=method, seed=seed, **(options or {}).get(method, {}))
        seconds = time.perf_counter() - started
        qll = float(post.query_log_likelihood(x, metric_samples)[0])
        row = {
            "method": method,
            "c_elbo": float(post.c_elbo(metric_samples)[0]) if post.has_density else None,
            "query_ll": qll,
            "gap": float(exact[0]) - qll,
            "seconds": seconds,
        }
        rows.append(row)
        grids.append(post.complete(samples, mean=True)[:, 0])
    completions = torch.stack(grids, 1)  # [samples, methods, ...]
    batch = len(methods)
    xs, ms = x.expand(batch, *x.shape[1:]), m.expand(batch, *m.shape[1:])
    save_completions(xs, ms, completions, out, labels=methods)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'method':<11} {'C-ELBO':>9} {'query LL':>9} {'gap':>7} {'seconds':>8}"]
    for r in rows:
        c = "n/a" if r["c_elbo"] is None else f"{r['c_elbo']:.2f}"
        lines.append(f"{r['method']:<11} {c:>9} {r['query_ll']:>9.2f} {r['gap']:>7.2f} {r['seconds']:>8.2f}")
    return "\n".join(lines)
