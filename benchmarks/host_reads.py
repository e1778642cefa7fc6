"""Reads of device values on the host per fit, for each method, at its work option x1 and x2.

On a GPU every read (``item()``, ``bool()``, a copy to the CPU) waits for the queue to drain,
so a fit that reads once per step runs at the host's pace. This counts them without a GPU,
on the virtual device of ``tests/virtual_device.py`` (CUDA's rules, the CPU's kernels), for
five queries of a small linear-Gaussian model.

    python benchmarks/host_reads.py
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from virtual_device import counting_syncs

from condvae import METHODS, LinearGaussianVAE, condition
from condvae.partial.encoder import build_partial_encoder

# Small budgets: the count, not the accuracy, is measured; the first option named is the work.
OPTIONS: dict[str, dict[str, Any]] = {
    "meanfield": {"steps": 20},
    "gvi": {"steps": 20},
    "planar": {"steps": 20},
    "spline": {"steps": 3},
    "fcn": {"steps": 5},
    "mixture": {"steps": 10, "components": 3},
    "semi": {"steps": 5},
    "hmc": {"warmup": 20, "chains": 2, "draws": 20},
    "ais": {"temperatures": 10, "particles": 8},
    "importance": {"particles": 500},
    "ipa-sir": {"particles": 200},
    "rejection": {"budget": 100_000, "round_size": 2000, "samples": 16},
    "grid": {"size": 32},
    "ipa": {},
    "auto": {},
}
AMORTIZED = ("ipa", "semi", "ipa-sir", "auto")


def reads(method: str, scale: int) -> int:
    latent_dim = 2 if method == "grid" else 3
    model = LinearGaussianVAE.random(data_dim=6, latent_dim=latent_dim, noise=0.5, seed=1).requires_grad_(
        False
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = model.decode(torch.randn(5, latent_dim, generator=gen)).mean
    mask = torch.rand(5, 6, generator=gen) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    options = dict(OPTIONS[method])
    if options:
        work = next(iter(options))
        options[work] *= scale
    if method in AMORTIZED:
        torch.manual_seed(0)
        options["encoder"] = build_partial_encoder(model).eval()
    with counting_syncs() as virtual:
        moved = {
            k: copy.deepcopy(v).to(virtual.device) if isinstance(v, torch.nn.Module) else v
            for k, v in options.items()
        }
        vae = copy.deepcopy(model).to(virtual.device)
        before = virtual.syncs
        condition(vae, x, mask, method=method, **moved)
        return virtual.syncs - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(sorted(METHODS)), help="comma-separated methods")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("| method | work option | host reads, x1 | host reads, x2 |")
    print("| --- | --- | ---: | ---: |")
    for method in args.methods.split(","):
        work = next(iter(OPTIONS[method]), "(one pass)")
        print(f"| {method} | {work} | {reads(method, 1)} | {reads(method, 2)} |", flush=True)


if __name__ == "__main__":
    main()
