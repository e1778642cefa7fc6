"""The README's demo: inpainting real test digits with a bundled model.

Loads the model by name, hides most of ``n`` test images (``mask``, default: only the top
half observed), completes them with several conditioning methods, writes one PNG (the
evidence, the truth, completions per method with the evidence painted over them) and prints
a per-method table (C-ELBO, query log-likelihood of the hidden pixels, its gap to the model's
exact value, seconds) and the model's recorded test scores.
"""

from __future__ import annotations

import math
import time

import torch

from condvae.conditioning import condition
from condvae.conditioning.base import Query
from condvae.data import fixed_binarize
from condvae.errors import CondVAEError
from condvae.evaluate import load_model_dataset
from condvae.guards import check_count, check_output_file
from condvae.masks import make_mask
from condvae.metrics import Reference, reference_query_log_likelihood
from condvae.partial.pretrained import find_bundled
from condvae.plotting import save_completions
from condvae.store import from_pretrained

DEMO_METHODS = {"gvi": {"steps": 300}, "planar": {"steps": 300}, "mixture": {"steps": 300}}
AMORTIZED = {"ipa": {}, "semi": {}}  # shown when the model has a bundled partial encoder


def run_demo(
    model_name: str = "mnist-mlp-z50",
    out: str = "demo.png",
    n: int = 4,
    mask: str = "top-half",
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> list[dict[str, float | str | None]]:
    """Run the demo; one row per method with its metrics, or its ``error`` when it failed."""
    check_count(n, "n", what="number of images")
    path = check_output_file(out)
    model = from_pretrained(model_name, device=device)
    card = getattr(model, "card", {}) or {}
    dataset = card.get("dataset")
    if not dataset:
        raise CondVAEError(f"model: {model_name!r} does not say which dataset it was trained on")
    if mask == "top-half" and len(model.data_shape) == 1:
        mask = "random:0.5"  # a table's features have no top half: half of them, at random
    pixels = make_mask(mask, model.data_shape, seed=seed)  # a bad spec fails before the data is read
    data = load_model_dataset(model, dataset, "test", data_dir)
    if n > len(data):
        raise CondVAEError(
            f"n: the {dataset} test split has {len(data)} images; expected at most {len(data)}"
        )
    x = data.x[:n].to(device)
    if model.likelihood.name == "bernoulli":
        x = fixed_binarize(x)
    m = pixels.expand(n, *model.data_shape).to(device)
    Query(model, x, m, seed=seed)  # evidence errors are the input's, not any one method's
    print(
        f"model {model_name}: {model.architecture}, latent {model.latent_dim}, "
        f"{model.likelihood.name} likelihood, trained on {dataset}"
    )
    for key, value in card.get("metrics", {}).items():
        print(f"  {key}: {value}")
    if not bool(m.flatten(1).any(1).all()):
        print(f"note: mask {mask!r} observes nothing, so every completion is a sample of the prior")
    torch.manual_seed(seed)
    try:
        reference = reference_query_log_likelihood(model, x, m, particles=5000)
    except CondVAEError as exc:
        reference = Reference(torch.full((n,), math.nan), "none", str(exc))
    print(f"\n{n} test images, evidence = {mask}; per method, means over the images:")
    print(f"{'method':<9} {'C-ELBO':>9} {'query LL':>10} {'gap':>7} {'seconds':>8}")
    rows: list[dict[str, float | str | None]] = []
    panels, shown = [], []
    methods = dict(DEMO_METHODS)
    if find_bundled(model) is not None:
        methods.update(AMORTIZED)
    for method, options in methods.items():
        started = time.perf_counter()
        try:
            post = condition(model, x, m, method=method, seed=seed, **options)
        except CondVAEError as exc:
            rows.append({"method": method, "error": str(exc)})
            print(f"{method:<9} failed: {exc}")
            continue
        seconds = time.perf_counter() - started
        c_elbo = float(post.c_elbo(500).mean())
        qll = post.query_log_likelihood(x, 2000)
        gap = reference.gap(qll)
        row: dict[str, float | str | None] = {
            "method": method,
            "c_elbo": c_elbo,
            "query_ll": float(qll.mean()),
            "gap": float(gap.mean()) if bool(reference.available.all()) else None,
            "seconds": seconds,
        }
        rows.append(row)
        shown_gap = "n/a" if row["gap"] is None else f"{row['gap']:.2f}"
        print(f"{method:<9} {c_elbo:>9.2f} {row['query_ll']:>10.2f} {shown_gap:>7} {seconds:>8.2f}")
        panels.append(post.complete(4, mean=True))
        shown.append(method)
    if reference.why:
        print(f"gap n/a: {reference.why}")
    if not panels:
        raise CondVAEError(f"method: every method failed on {model_name!r} (see above)")
    completions = torch.cat(panels, 0)  # [4 * methods, n, ...]: 4 completions per method
    path = save_completions(x, m, completions, path, groups=shown)
    print(
        f"\nwrote {path}: per image, the evidence, the truth, then 4 completions each from "
        f"{', '.join(shown)} (evidence painted over them)"
    )
    return rows
