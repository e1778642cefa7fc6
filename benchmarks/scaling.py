"""Scaling curves: queries per second against the batch size and the latent size for each
conditioning method, beside the cost model; training throughput against the number of processes.

    python benchmarks/scaling.py --out docs/scaling

Conditioning: ``mnist-mlp-z50`` (decoder 50-512-512-784, Bernoulli) for the batch sweep (1 to
4096 queries in one ``condition`` call), and untrained MLP VAEs of the same shape with latent
2, 10, 50 and 100 for the latent sweep (timing does not depend on the weights), at batch 256.
Queries are random binary images with random masks observing 30% of the pixels. Each
iterative method runs a short fixed budget (``SHORT`` below) so that 4096 queries fit in
minutes; its time per query at its defaults is the measured time scaled by the ratio of decoder
evaluations (the cost model), which the tables print beside it. The cost model: decoder
evaluations per query (from the fit's diagnostics) x FLOPs of one decoder evaluation
(2 x the weights of its linear layers), x 3 for methods that backpropagate through the decoder
(a forward and two backward matmuls), x 2 for HMC's leapfrog steps (forward and gradient).
A batch size is skipped for a method once a smaller one took more than ``--cap`` seconds.

Training: a VAE of the same shape on ``--train-items`` synthetic binary images, ``--train-steps``
Adam steps of batch 128, with 1 process and with ``torchrun --nproc_per_node 2`` (gloo), the
same global batch and micro-batches (2): items per second and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import machine

from condvae import ConditioningWarning, MemoryLimitError, condition, load
from condvae.models import VAE, build_model

SHORT = {
    "ipa": {},
    "importance": {"particles": 256},
    "gvi": {"steps": 20},
    "planar": {"steps": 20},
    "mixture": {"steps": 20},
    "hmc": {"warmup": 10, "draws": 10, "chains": 2},
    "ais": {"temperatures": 20, "particles": 8},
    "meanfield": {"steps": 20},
    "spline": {"steps": 20},
    "fcn": {"steps": 20},
    "semi": {"steps": 10},
    "ipa-sir": {"particles": 256},
    "auto": {},
    "rejection": {"budget": 100_000, "samples": 16},
    "grid": {"size": 100},
}
DEFAULT_EVALS = {  # decoder evaluations per query at each method's default options
    "ipa": 0,
    "importance": 1000,
    "gvi": 500 * 16,
    "planar": 500 * 16,
    "mixture": 500 * 16,
    "hmc": (500 + 500) * 10 * 4,
    "ais": 200 * 64 * (10 + 1),
    "meanfield": 500 * 16,
    "spline": 500 * 16,
    "fcn": 500 * 16,
    "semi": 30 * 16,
    "ipa-sir": 1000,
    "grid": 200 * 200,
}
BACKPROP = {
    "gvi": 3,
    "planar": 3,
    "mixture": 3,
    "meanfield": 3,
    "spline": 3,
    "fcn": 3,
    "semi": 3,
    "hmc": 2,
    "ais": 2,
}
# Methods for low-dimensional latents run on the 2-d MNIST model (grid and rejection need d = 2
# to be useful, fcn's Jacobians limit it to d <= 16); the rest on the 50-d one.
LOW_DIMENSIONAL = ("grid", "rejection", "fcn")
MAX_LATENT = {"grid": 2, "rejection": 2, "fcn": 16}
AMORTIZED = ("ipa", "semi", "ipa-sir", "auto")  # need the bundled partial encoder of their model


def decoder_flops(vae: VAE) -> float:
    """FLOPs of one decoder evaluation: 2 per weight of its linear layers."""
    return 2.0 * sum(m.weight.numel() for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear))


def queries(vae: VAE, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, *vae.data_shape, generator=gen) > 0.8).float()
    return x, torch.rand(b, *vae.data_shape, generator=gen) < 0.3


def time_fit(vae: VAE, method: str, b: int) -> tuple[float, int, str]:
    """Seconds of one fit of b queries (best of 2 for short ones), decoder evaluations per query
    and the method that did the work (``auto`` chooses one)."""
    x, mask = queries(vae, b)
    best, evals, chosen = math.inf, 0, method
    for _ in range(2):
        start = time.perf_counter()
        post = condition(vae, x, mask, method=method, **SHORT[method])
        if method in ("ipa", "rejection"):  # their draws are made by sample(), not by the fit
            post.sample(SHORT[method].get("samples", 1))
        best = min(best, time.perf_counter() - start)
        evals = int(post.diagnostics.decoder_evaluations_per_query)
        if method == "rejection":
            evals += round(post.diagnostics.proposals / b)
        chosen = getattr(post.diagnostics, "chosen", "") or method
        if best > 5:
            break
    return best, evals, chosen


def sweep_batches(methods: list[str], batches: list[int], cap: float) -> list[dict]:
    rows: list[dict] = []
    for method in methods:
        model = "mnist-mlp-z2" if method in LOW_DIMENSIONAL else "mnist-mlp-z50"
        vae = load(model)
        flops = decoder_flops(vae)
        for b in batches:
            try:
                seconds, evals, chosen = time_fit(vae, method, b)
            except MemoryLimitError as err:  # the library refuses it up front: say so and stop there
                print(f"# {method} at batch {b}: {err}", flush=True)
                break
            per_query = seconds / b
            # auto: as it chose; rejection: its proposals follow the acceptance rate, not a budget
            scale = DEFAULT_EVALS.get(method, evals) / evals if evals else 1.0
            rows.append(
                {
                    "method": method,
                    "model": model,
                    "batch": b,
                    "qps": b / seconds,
                    "evals": evals,
                    "chosen": chosen,
                    "gflop_per_query": evals * flops * BACKPROP.get(chosen, 1) / 1e9,
                    "gflops": evals * flops * BACKPROP.get(chosen, 1) * b / seconds / 1e9,
                    "default_qps": 1 / (per_query * scale),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            if seconds > cap:
                break
    return rows


def sweep_latents(methods: list[str], latents: list[int], batch: int) -> list[dict]:
    rows = []
    for d in latents:
        torch.manual_seed(0)
        vae = build_model(
            {"architecture": "mlp", "latent_dim": d, "hidden": [512, 512], "data_shape": [1, 28, 28]}
        )
        vae.eval()
        for method in methods:
            if method in AMORTIZED or d > MAX_LATENT.get(method, d):
                continue  # partial encoders exist for the bundled models only
            seconds, evals, _ = time_fit(vae, method, batch)
            rows.append(
                {"method": method, "latent": d, "batch": batch, "qps": batch / seconds, "evals": evals}
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def train_throughput(processes: list[int], steps: int, items: int) -> list[dict]:
    """Items per second of ``condvae train`` on synthetic MNIST-shaped data with N processes."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data" / "mnist"
        root.mkdir(parents=True)
        _write_idx(root, items)
        for n in processes:
            out = Path(tmp) / f"run{n}"
            args = ["train", "--dataset", "mnist", "--data-dir", str(Path(tmp) / "data"), "--arch", "mlp"]
            args += [
                "--latent-dim",
                "50",
                "--hidden",
                "512,512",
                "--batch-size",
                "128",
                "--micro-batches",
                "2",
            ]
            args += ["--max-steps", str(steps), "--epochs", "1000", "--checkpoint-every", "100000"]
            args += ["--valid-every", "100000", "--no-progress", "--out", str(out)]
            command = [sys.executable, "-m", "condvae", *args]
            env = dict(os.environ)
            if n > 1:
                command = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={n}",
                ]
                command += ["-m", "condvae", *args]
                env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
            subprocess.run(command, env=env, check=True, capture_output=True)
            card = json.loads((out / "model" / "config.json").read_text())["card"]["training"]
            seconds = card["training_seconds"]
            rows.append(
                {"processes": n, "steps": steps, "seconds": seconds, "items_per_s": steps * 128 / seconds}
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _write_idx(root: Path, items: int) -> None:
    """Synthetic MNIST-shaped IDX files (binary-ish strokes), the layout ``load_dataset`` reads."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    for prefix, n in (("train", items), ("t10k", 200)):
        images = (rng.random((n, 28, 28)) > 0.8).astype(np.uint8) * 255
        labels = rng.integers(0, 10, n).astype(np.uint8)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())


def plot(batch_rows: list[dict], latent_rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(r["method"] for r in batch_rows + latent_rows))
    colours = plt.get_cmap("tab20")
    style = {m: {"color": colours(i % 20), "marker": "osD^v<>p"[i % 8]} for i, m in enumerate(methods)}
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    for method in dict.fromkeys(r["method"] for r in batch_rows):
        rows = [r for r in batch_rows if r["method"] == method]
        low = rows[0].get("model") == "mnist-mlp-z2"
        label = f"{method} (z2)" if low else method
        ax.loglog([r["batch"] for r in rows], [r["qps"] for r in rows], "-", label=label, **style[method])
    ax.set(xlabel="queries per condition() call", ylabel="queries per second (short budgets)")
    ax.set_title("mnist-mlp-z50 (z2: mnist-mlp-z2), 2 CPU cores")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "batch.png", dpi=110)
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    for method in dict.fromkeys(r["method"] for r in latent_rows):
        rows = [r for r in latent_rows if r["method"] == method]
        ax.semilogy([r["latent"] for r in rows], [r["qps"] for r in rows], "-", label=method, **style[method])
    ax.set(xlabel="latent size", ylabel="queries per second (batch 256, short budgets)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latent.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="ipa,importance,gvi,planar,mixture,hmc,ais")
    parser.add_argument("--batches", default="1,4,16,64,256,1024,4096")
    parser.add_argument("--latents", default="2,10,50,100")
    parser.add_argument("--latent-batch", type=int, default=256)
    parser.add_argument(
        "--cap", type=float, default=60.0, help="seconds after which larger batches are skipped"
    )
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--train-items", type=int, default=6400)
    parser.add_argument("--out", default="docs/scaling", help="folder for the plots and scaling.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other methods' rows (and the training rows, with --processes '') of OUT/scaling.json",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConditioningWarning)  # short budgets: low ESS is expected
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in SHORT]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected some of {sorted(SHORT)}")
    print(f"# {machine()}")
    batch_rows = sweep_batches(methods, [int(b) for b in args.batches.split(",")], args.cap)
    latent_rows = sweep_latents(methods, [int(d) for d in args.latents.split(",")], args.latent_batch)
    processes = [int(n) for n in args.processes.split(",") if n]
    train_rows = train_throughput(processes, args.train_steps, args.train_items) if processes else []
    out = Path(args.out)
    if args.merge and (out / "scaling.json").is_file():
        old = json.loads((out / "scaling.json").read_text())
        batch_rows = [r for r in old["batch"] if r["method"] not in methods] + batch_rows
        latent_rows = [r for r in old["latent"] if r["method"] not in methods] + latent_rows
        train_rows = train_rows or old["train"]
    plot(batch_rows, latent_rows, out)
    (out / "scaling.json").write_text(
        json.dumps({"batch": batch_rows, "latent": latent_rows, "train": train_rows}, indent=1)
    )
    print(
        "\n| method | model | batch | queries/s | decoder evals/query | GFLOP/query | GFLOP/s "
        "| queries/s at defaults |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in batch_rows:
        print(
            f"| {r['method']} | {r.get('model', 'mnist-mlp-z50')} | {r['batch']} | {r['qps']:.1f} | "
            f"{r['evals']} | {r['gflop_per_query']:.4f} | {r['gflops']:.1f} | {r['default_qps']:.2f} |"
        )
    print(f"\n| method | latent | queries/s (batch {args.latent_batch}) | decoder evals/query |")
    print("| --- | ---: | ---: | ---: |")
    for r in latent_rows:
        print(f"| {r['method']} | {r['latent']} | {r['qps']:.1f} | {r['evals']} |")
    print("\n| processes | steps | seconds | items/s | speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in train_rows:
        print(
            f"| {r['processes']} | {r['steps']} | {r['seconds']:.1f} | {r['items_per_s']:.0f} | "
            f"{r['items_per_s'] / train_rows[0]['items_per_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
