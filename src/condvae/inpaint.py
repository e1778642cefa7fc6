"""Inpainting: one image, one mask, several methods; completions as a PNG and a metrics table.

For each method: the C-ELBO (methods with a density), the query log-likelihood of the true
hidden pixels log (1/n) sum p(y_true | z_n), its gap to the model's exact value
log p(y_true | x_o) (grid for a 2-d latent, closed form for the linear-Gaussian model, else a
large importance-sampling estimate), and the time to fit.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from condvae.conditioning import METHODS, condition
from condvae.conditioning.base import Query
from condvae.errors import CondVAEError
from condvae.evaluate import load_query_image
from condvae.guards import check_count, check_output_file
from condvae.masks import make_mask
from condvae.metrics import Reference, reference_query_log_likelihood
from condvae.models import VAE
from condvae.plotting import save_completions


def parse_methods(text: str) -> list[str]:
    """``"gvi,planar"`` -> the method names, checked against the registry."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise CondVAEError(
            f"method: expected one or more of {sorted(METHODS)}, comma-separated; got {text!r}"
        )
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CondVAEError(f"method: unknown {unknown}; expected some of {sorted(METHODS)}")
    return methods


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
    """Complete ``image`` under ``mask`` with each of ``methods``; one row per method, with its
    metrics or, when the method failed on this query, its ``error`` (the others still run). The
    reference's own failure makes the gaps unavailable (row ``gap`` None, ``reference`` why)."""
    parse_methods(",".join(methods))
    check_count(samples, "samples", what="number of completions")
    out = check_output_file(out)
    x = load_query_image(model, image, data_dir).to(model.device)
    m = make_mask(mask, model.data_shape, seed=seed)[None].to(model.device)
    Query(model, x, m, seed=seed)  # evidence errors are the input's, not any one method's
    try:
        reference = reference_query_log_likelihood(model, x, m)
    except CondVAEError as exc:
        reference = Reference(torch.full((1,), math.nan), "none", str(exc))
    rows, grids = [], []
    for method in methods:
        started = time.perf_counter()
        try:
            post = condition(model, x, m, method=method, seed=seed, **(options or {}).get(method, {}))
        except CondVAEError as exc:
            rows.append({"method": method, "error": str(exc), "prior_only": not bool(m.any())})
            continue
        seconds = time.perf_counter() - started
        qll = float(post.query_log_likelihood(x, metric_samples)[0])
        gap = float(reference.value[0]) - qll
        row = {
            "method": method,
            "c_elbo": float(post.c_elbo(metric_samples)[0]) if post.has_density else None,
            "query_ll": qll,
            "gap": None if math.isnan(gap) else gap,
            "reference": reference.why,
            "seconds": seconds,
            "prior_only": not bool(m.any()),
        }
        rows.append(row)
        grids.append((method, post.complete(samples, mean=True)[:, 0]))
    if grids:
        completions = torch.stack([g for _, g in grids], 1)  # [samples, methods, ...]
        batch = len(grids)
        xs, ms = x.expand(batch, *x.shape[1:]), m.expand(batch, *m.shape[1:])
        save_completions(xs, ms, completions, out, labels=[name for name, _ in grids])
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The metrics table; a failed method's line gives its error, an unavailable gap says why below."""
    lines = [f"{'method':<11} {'C-ELBO':>9} {'query LL':>9} {'gap':>7} {'seconds':>8}"]
    why = None
    for r in rows:
        if "error" in r:
            lines.append(f"{r['method']:<11} failed: {r['error']}")
            continue
        c = "n/a" if r["c_elbo"] is None else f"{r['c_elbo']:.2f}"
        gap = "n/a" if r["gap"] is None else f"{r['gap']:.2f}"
        lines.append(f"{r['method']:<11} {c:>9} {r['query_ll']:>9.2f} {gap:>7} {r['seconds']:>8.2f}")
        why = why or r.get("reference")
    if why:
        lines.append(f"gap n/a: {why}")
    return "\n".join(lines)
