"""Amortized against per-query conditioning on MNIST and Fashion-MNIST, by observed fraction.

    python benchmarks/amortized.py                                   # the table in docs/benchmarks.md
    python benchmarks/amortized.py --models mnist-hier-z28 fashion-hier-z28 --methods ipa,semi,planar
    python benchmarks/amortized.py --quick                           # 4 queries per bin (smoke test)
    python benchmarks/amortized.py --timing                          # IPA queries/s on 1000 queries

On a 2-d latent add ``grid`` to ``--methods``: the exact posterior, the ceiling of every column.

Queries: test images (MNIST with the fixed seeded binarisation) paired with masks from the
training mixture (``condvae.masks``, seeded), sorted into observed-fraction bins 0-20 %, ...,
80-100 % (masks observing nothing or everything are skipped), ``--queries`` per bin.
Methods: ``ipa`` (partial encoder, O_for), ``ipa-r`` (O_rev), ``semi`` (GVI started at IPA,
``--semi-steps`` steps), per-query ``planar`` (500 steps x 16 draws) and ``hmc`` (4 chains,
300 warm-up + 100 draws). Per bin and method: median query log-likelihood
log (1/1000) sum p(y_true | z_m), coverage (min over K=100 completions of the RMS distance to
the truth on the hidden pixels, decoder means; lower = the truth is covered), diversity (mean
pairwise RMS distance of those completions), the Fréchet distance in condvae's classifier
features between 10 completions per query and 5000 test images (the true query images score
the ``truth`` row: as many other test images, the floor at this sample size), and queries
per second of the fit (the bin fitted as one batch). A second table follows semi-amortized
refinement step by step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from common import machine

from condvae import condition, load
from condvae.classifier import load_classifier
from condvae.conditioning import Posterior
from condvae.data import fixed_binarize, load_dataset
from condvae.masks import sample_masks
from condvae.metrics import coverage, diversity, frechet_distance
from condvae.models import VAE

BINS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]
DATASET = {"mnist": "mnist", "fashion": "fashion_mnist"}


def dataset_of(model: str) -> str:
    return DATASET[model.split("-")[0]]


def test_images(vae: VAE, dataset: str, data_dir: str | None) -> torch.Tensor:
    x = load_dataset(dataset, "test", data_dir).x
    return fixed_binarize(x) if vae.likelihood.name == "bernoulli" else x


def binned_queries(x: torch.Tensor, per_bin: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """per_bin (image, mask) pairs per observed-fraction bin, distinct images throughout."""
    masks = sample_masks(
        "mixture", 40 * per_bin * len(BINS), tuple(x.shape[1:]), torch.Generator().manual_seed(seed)
    )
    frac = masks.float().flatten(1).mean(1)
    out, start = [], 0
    for lo, hi in BINS:
        inside = ((frac > lo) if lo == 0 else (frac >= lo)) & (frac < hi)
        pick = inside.nonzero().flatten()[:per_bin]
        if len(pick) < per_bin:
            raise SystemExit(f"not enough masks in bin {lo}-{hi}; raise the pool")
        out.append((x[start : start + per_bin], masks[pick]))
        start += per_bin
    return out


def fit(vae: VAE, model: str, method: str, x: torch.Tensor, mask: torch.Tensor, semi_steps: int) -> Posterior:
    if method == "ipa":
        return condition(vae, x, mask, method="ipa", encoder=f"{model}-ipa")
    if method == "ipa-r":
        return condition(vae, x, mask, method="ipa", encoder=f"{model}-ipar")
    if method == "semi":
        return condition(vae, x, mask, method="semi", encoder=f"{model}-ipa", steps=semi_steps)
    if method == "hmc":
        return condition(vae, x, mask, method="hmc", warmup=300, draws=100)
    return condition(vae, x, mask, method=method)


@torch.no_grad()
def score(vae: VAE, post: Posterior, x: torch.Tensor, mask: torch.Tensor, classifier, k: int) -> dict:
    qll = post.query_log_likelihood(x, 1000)
    completions = post.complete(k, mean=True)  # [K, B, ...]
    return {
        "qll": qll,
        "coverage": coverage(completions, x, mask),
        "diversity": diversity(completions, mask),
        "features": classifier.features(completions[:10].flatten(0, 1)),
    }


@torch.no_grad()
def run_model(model: str, args: argparse.Namespace) -> list[dict]:
    vae = load(model)
    dataset = dataset_of(model)
    x = test_images(vae, dataset, args.data_dir)
    classifier = load_classifier(dataset)
    reference = classifier.features(x[-5000:])  # the last 5000 test images; queries use the first
    truth_fd = frechet_distance(classifier.features(x[2000 : 2000 + 10 * args.queries]), reference)
    rows = []
    for (lo, hi), (xb, mb) in zip(BINS, binned_queries(x, args.queries, args.seed), strict=True):
        rows.append({"model": model, "bin": f"{lo:.0%}-{hi:.0%}", "method": "truth", "fd": truth_fd})
        print(_row(rows[-1]), flush=True)
        for method in args.methods.split(","):
            started = time.perf_counter()
            post = fit(vae, model, method, xb, mb, args.semi_steps)
            seconds = time.perf_counter() - started
            s = score(vae, post, xb, mb, classifier, args.k)
            rows.append(
                {
                    "model": model,
                    "bin": f"{lo:.0%}-{hi:.0%}",
                    "method": method,
                    "qll": statistics.median(s["qll"].tolist()),
                    "coverage": float(s["coverage"].mean()),
                    "diversity": float(s["diversity"].mean()),
                    "fd": frechet_distance(s["features"], reference),
                    "qps": len(xb) / seconds,
                }
            )
            print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict) -> str:
    if r["method"] == "truth":
        return f"| {r['model']} | {r['bin']} | (true images) | | | | {r['fd']:.2f} | |"
    return (
        f"| {r['model']} | {r['bin']} | {r['method']} | {r['qll']:.2f} | {r['coverage']:.4f} | "
        f"{r['diversity']:.4f} | {r['fd']:.2f} | {r['qps']:.1f} |"
    )


@torch.no_grad()
def refinement(model: str, args: argparse.Namespace) -> None:
    """C-ELBO and query LL of semi-amortized GVI after t steps, against IPA and planar."""
    vae = load(model)
    x = test_images(vae, dataset_of(model), args.data_dir)
    queries = binned_queries(x, args.queries, args.seed)
    xb = torch.cat([q[0] for q in queries])
    mb = torch.cat([q[1] for q in queries])
    print(f"\nsemi-amortized refinement, {model}, {len(xb)} queries (all bins), C-ELBO and query LL medians")
    print("| start | steps | C-ELBO | query LL | seconds |")
    print("| --- | --- | --- | --- | --- |")
    runs = [("ipa", {}), *[("semi", {"steps": t}) for t in (5, 10, 30, 60)], ("planar", {}), ("gvi", {})]
    if vae.latent_dim == 2:
        runs.append(("grid", {}))  # exact: the C-ELBO column is then log p(x_o) itself
    for name, kwargs in runs:
        started = time.perf_counter()
        if name == "ipa":
            post = condition(vae, xb, mb, method="ipa", encoder=f"{model}-ipa")
        elif name == "semi":
            post = condition(vae, xb, mb, method="semi", encoder=f"{model}-ipa", **kwargs)
        else:
            post = condition(vae, xb, mb, method=name)
        seconds = time.perf_counter() - started
        steps = {"ipa": 0, "semi": kwargs.get("steps"), "planar": 500, "gvi": 500}.get(name, "-")
        label = {"ipa": "IPA", "semi": "IPA", "planar": "prior (planar)", "gvi": "prior (gvi)"}.get(
            name, "exact (grid)"
        )
        c_elbo = post.log_evidence() if name == "grid" else post.c_elbo(1000)
        c = statistics.median(c_elbo.tolist())
        q = statistics.median(post.query_log_likelihood(xb, 1000).tolist())
        print(f"| {label} | {steps} | {c:.2f} | {q:.2f} | {seconds:.2f} |", flush=True)


def timing(model: str, args: argparse.Namespace) -> None:
    vae = load(model)
    x = test_images(vae, dataset_of(model), args.data_dir)[:1000]
    mask = sample_masks("mixture", 1000, vae.data_shape, torch.Generator().manual_seed(args.seed))
    mask[:, :, 0, 0] = True  # at least one pixel observed
    mask[:, :, -1, -1] = False  # and one hidden
    condition(vae, x[:10], mask[:10], method="ipa", encoder=f"{model}-ipa")  # warm-up
    for batch in (1, 1000):
        times = []
        for _ in range(5 if batch > 1 else 50):
            started = time.perf_counter()
            condition(vae, x[:batch], mask[:batch], method="ipa", encoder=f"{model}-ipa").sample(1)
            times.append(time.perf_counter() - started)
        best = min(times)
        print(f"| {model} | {batch} | {best * 1000:.1f} ms | {batch / best:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["mnist-mlp-z2", "fashion-conv-z32"])
    parser.add_argument("--methods", default="ipa,ipa-r,semi,planar,hmc")
    parser.add_argument("--queries", type=int, default=20, help="queries per observed-fraction bin")
    parser.add_argument("--k", type=int, default=100, help="completions for coverage and diversity")
    parser.add_argument("--semi-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--timing", action="store_true", help="only IPA queries per second")
    parser.add_argument("--no-refinement", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.queries, args.k = 4, 20
    print(machine())
    if args.timing:
        print("| model | queries per batch | time per batch | queries/s |")
        print("| --- | --- | --- | --- |")
        for model in args.models:
            timing(model, args)
        return 0
    print(
        f"| model | observed | method | query LL (median) | coverage (K={args.k}) | diversity | Fréchet "
        "| queries/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        run_model(model, args)
    if not args.no_refinement:
        for model in args.models:
            refinement(model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
