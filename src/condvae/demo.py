"""The README's demo: inpainting real test digits with a bundled model.

Loads the model by name, hides most of ``n`` test images (``mask``, default: only the top
half observed), completes them with several conditioning methods, writes one PNG (the
evidence, the truth, completions per method with the evidence painted over them) and prints
a per-method table (C-ELBO, query log-likelihood of the hidden pixels, its gap to the model's
exact value, seconds) and the model's recorded test scores.
"""

from __future__ import annotations

import time

import torch

from condvae.conditioning import condition
from condvae.data import fixed_binarize
from condvae.errors import CondVAEError
from condvae.evaluate import load_model_dataset
from condvae.masks import make_mask
from condvae.metrics import exact_query_log_likelihood
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
) -> list[dict[str, float | str]]:
    if n < 1:
        raise CondVAEError(f"n: expected a positive number of images, got {n}")
    model = from_pretrained(model_name, device=device)
    card = getattr(model, "card", {}) or {}
    dataset = card.get("dataset")
    if not dataset:
        raise CondVAEError(f"model: {model_name!r} does not say which dataset it was trained on")
    x = load_model_dataset(model, dataset, "test", data_dir).x[:n].to(device)
    if model.likelihood.name == "bernoulli":
        x = fixed_binarize(x)
    m = make_mask(mask, model.data_shape, seed=seed).expand(n, *model.data_shape).to(device)
    print(
        f"model {model_name}: {model.architecture}, latent {model.latent_dim}, "
        f"{model.likelihood.name} likelihood, trained on {dataset}"
    )
    for key, value in card.get("metrics", {}).items():
        print(f"  {key}: {value}")
    torch.manual_seed(seed)
    exact = exact_query_log_likelihood(model, x, m, particles=5000)
    print(f"\n{n} test images, evidence = {mask}; per method, means over the images:")
    print(f"{'method':<9} {'C-ELBO':>9} {'query LL':>10} {'gap':>7} {'seconds':>8}")
    rows: list[dict[str, float | str]] = []
    panels = []
    methods = dict(DEMO_METHODS)
    if find_bundled(model) is not None:
        methods.update(AMORTIZED)
    for method, options in methods.items():
        started = time.perf_counter()
        post = condition(model, x, m, method=method, seed=seed, **options)
        seconds = time.perf_counter() - started
        c_elbo = float(post.c_elbo(500).mean())
        qll = post.query_log_likelihood(x, 2000)
        row = {
            "method": method,
            "c_elbo": c_elbo,
            "query_ll": float(qll.mean()),
            "gap": float((exact - qll).mean()),
            "seconds": seconds,
        }
        rows.append(row)
        print(f"{method:<9} {c_elbo:>9.2f} {row['query_ll']:>10.2f} {row['gap']:>7.2f} {seconds:>8.2f}")
        panels.append(post.complete(4, mean=True))
    completions = torch.cat(panels, 0)  # [4 * methods, n, ...]: 4 completions per method
    path = save_completions(x, m, completions, out)
    print(
        f"\nwrote {path}: per image, the evidence, the truth, then 4 completions each from "
        f"{', '.join(methods)} (evidence painted over them)"
    )
    return rows
