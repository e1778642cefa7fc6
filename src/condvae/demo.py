"""The README's demo: a bundled model on real test images.

Loads the model by name, reconstructs ``n`` test images of the dataset it was trained on, draws
``n`` samples from the prior, writes the three rows to a PNG, and prints the model's recorded
test scores next to a quick re-measurement on the first 500 test images (k = 100).
"""

from __future__ import annotations

import torch

from condvae.data import fixed_binarize
from condvae.errors import CondVAEError
from condvae.evaluate import evaluate, load_model_dataset
from condvae.plotting import save_rows
from condvae.zoo import load


def run_demo(
    model_name: str = "mnist-mlp-z50",
    out: str = "demo.png",
    n: int = 8,
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    if n < 1:
        raise CondVAEError(f"n: expected a positive number of images, got {n}")
    model = load(model_name, device=device)
    card = getattr(model, "card", {}) or {}
    dataset = card.get("dataset")
    if not dataset:
        raise CondVAEError(f"model: {model_name!r} does not say which dataset it was trained on")
    data = load_model_dataset(model, dataset, "test", data_dir)
    x = data.x[:n].to(device)
    torch.manual_seed(seed)
    with torch.no_grad():
        shown = fixed_binarize(x) if model.likelihood.name == "bernoulli" else x
        recon = model.reconstruct(shown)
        samples = model.sample(n)
    path = save_rows([("test images", shown), ("reconstructions", recon), ("prior samples", samples)], out)
    subset = data.x[:500]
    if model.likelihood.name == "bernoulli":
        subset = fixed_binarize(subset)
    quick = evaluate(model, subset.to(device), k=100, seed=seed, progress=False)
    print(
        f"model {model_name}: {model.architecture}, latent {model.latent_dim}, "
        f"{model.likelihood.name} likelihood, trained on {dataset}"
    )
    for key, value in card.get("metrics", {}).items():
        print(f"  recorded  {key}: {value}")
    print(
        f"  measured now on {quick['images']} test images: ELBO {quick['elbo']:.2f} nats, "
        f"IW-NLL (k=100) {quick['iw_nll']:.2f} nats"
    )
    print(f"wrote {path}")
    return quick
