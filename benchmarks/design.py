"""Experimental design: does EIG under a conditioned VAE choose better glimpses and features?

    python benchmarks/design.py                     # all: the tables and plots of docs/benchmarks.md
    python benchmarks/design.py --quick             # 100 images, 3 steps, one table (smoke test)
    python benchmarks/design.py --datasets wine     # one dataset

Images (MNIST with ``mnist-hier-z28``, Fashion-MNIST with ``fashion-conv-z32``): the first
``--images`` test images (MNIST binarised as its Bernoulli VAE sees it), 4x4 glimpses on the
7 x 7 grid, ``--steps`` glimpses from no evidence, 16 completions per step. After each glimpse the
bundled partial-image classifier predicts the class from what has been seen; accuracy and NLL of
that prediction against the number of glimpses are the information curves, and the "full image"
row is the same classifier on the whole image (the bound). Strategies: EIG with ``ipa`` and with
``ipa-r`` completions, EIG with completions replaced by random training images
(``unconditional``), random glimpses (``random``), one fixed order chosen on 200 training images
(``sing``), and EIG with per-query ``gvi`` and ``mixture`` completions on the first
``--per-query`` images (their rows are marked; compare them with ``ipa`` on the same images).

Tables (breast cancer and wine with class targets, diabetes with a continuous one; their bundled
VAEs and partial encoders): every test row, every feature acquired one at a time, 64 completions
per step, EDDI's latent-space EIG towards the target. The target is predicted from the
conditioned VAE (``ipa``): accuracy and NLL of the class probabilities, or the RMSE of the
posterior mean in the target's units. ``random`` is averaged over 5 seeds.

AUIC is the area under the information curve over 0..T steps divided by T (trapezoid): the
average accuracy (higher is better), NLL or RMSE (lower is better) over the run. The time per
design step is for all the items together: completions, EIG of every candidate, the choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from common import machine

from condvae.data import fixed_binarize, load_dataset
from condvae.data.tables import load_table
from condvae.design import design, problem, sing_order
from condvae.design.api import training_items

IMAGES = {"mnist": "mnist-hier-z28", "fashion_mnist": "fashion-conv-z32"}
TABLES = {"breast_cancer": "breast-cancer-tab-z4", "wine": "wine-tab-z4", "diabetes": "diabetes-tab-z4"}
IMAGE_STRATEGIES = ["ipa", "ipa-r", "unconditional", "random", "sing"]
PER_QUERY = ["gvi", "mixture"]
TABLE_STRATEGIES = ["ipa", "gvi", "unconditional", "random", "sing"]


def auic(curve: list[float]) -> float:
    """Trapezoid area under ``curve`` (values after 0..T steps) divided by T."""
    steps = len(curve) - 1
    return sum((a + b) / 2 for a, b in itertools.pairwise(curve)) / steps


def class_curves(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """Accuracy and NLL after each step from probabilities ``[B, T + 1, K]``."""
    picked = probs.gather(-1, labels.view(-1, 1, 1).expand(-1, probs.shape[1], 1))[..., 0]
    return {
        "accuracy": (probs.argmax(-1) == labels[:, None]).float().mean(0).tolist(),
        "nll": (-picked.clamp_min(1e-12).log()).mean(0).tolist(),
    }


def run_images(dataset: str, args: argparse.Namespace) -> list[dict]:
    model = IMAGES[dataset]
    test = load_dataset(dataset, "test", args.data_dir)
    x, labels = test.x[: args.images], test.labels[: args.images]
    prob = problem(model, patch=4, data_dir=args.data_dir)
    if prob.vae.likelihood.name == "bernoulli":
        x = fixed_binarize(x)
    with torch.no_grad():
        full = prob.classifier(x, torch.ones_like(x, dtype=torch.bool)).softmax(-1)
    bound = class_curves(full[:, None], labels)
    records = [
        {
            "dataset": dataset,
            "strategy": "full image",
            "items": len(x),
            **{k: v * (args.steps + 1) for k, v in bound.items()},
        }
    ]
    train = training_items(prob)
    started = time.perf_counter()
    order = sing_order(prob, train, args.steps, 16)
    sing_seconds = time.perf_counter() - started
    jobs = [(s, len(x)) for s in IMAGE_STRATEGIES] + [(s, min(args.per_query, len(x))) for s in PER_QUERY]
    jobs += [("ipa", min(args.per_query, len(x)))]  # ipa on the per-query methods' images
    for strategy, n in jobs:
        if n == 0 or (strategy in PER_QUERY and args.quick):
            continue
        started = time.perf_counter()
        result = design(
            prob,
            x[:n],
            steps=args.steps,
            strategy=strategy,
            completions=16,
            train=train,
            order=order if strategy == "sing" else None,
        )
        seconds = time.perf_counter() - started
        record = {
            "dataset": dataset,
            "strategy": strategy,
            "items": n,
            **class_curves(result.predictions["probs"], labels[:n]),
            "completed": class_curves(result.predictions["probs_completed"], labels[:n]),
            "step_seconds": sum(result.seconds) / len(result.seconds),
            "seconds": seconds + (sing_seconds if strategy == "sing" else 0.0),
        }
        records.append(record)
        print(
            f"{dataset} {strategy} ({n} images): accuracy {[round(a, 3) for a in record['accuracy']]}, "
            f"{record['step_seconds']:.2f} s per step",
            flush=True,
        )
    return records


def run_table(name: str, args: argparse.Namespace) -> list[dict]:
    model = TABLES[name]
    prob = problem(model)
    vae = prob.vae
    rows = load_table(f"{name}+target", "test")
    x = vae.to_model(rows.x)
    truth = torch.as_tensor(rows.target, dtype=torch.float64)
    steps = len(prob.candidates) if not args.quick else 3
    train = training_items(prob)
    order = sing_order(prob, train, steps, 64, items=len(train))
    spec = vae.columns[vae.column_names.index("target")]
    records = []
    for strategy in TABLE_STRATEGIES:
        seeds = range(5) if strategy == "random" else range(1)
        runs = []
        for seed in seeds:
            result = design(
                prob,
                x,
                steps=steps,
                strategy=strategy,
                completions=64,
                train=train,
                order=order if strategy == "sing" else None,
                seed=seed,
            )
            pred = result.predictions
            if spec["kind"] == "gaussian":
                curves = {"rmse": ((pred["target_mean"] - truth[:, None]) ** 2).mean(0).sqrt().tolist()}
                inside = (pred["target_low"] <= truth[:, None]) & (truth[:, None] <= pred["target_high"])
                curves["coverage"] = inside.double().mean(0).tolist()
            else:
                codes = torch.tensor([spec["values"].index(v) for v in rows.target.tolist()])
                curves = class_curves(pred["target_probs"], codes)
            runs.append((curves, result))
        curves = {k: torch.tensor([c[k] for c, _ in runs]).mean(0).tolist() for k in runs[0][0]}
        record = {
            "dataset": name,
            "strategy": strategy,
            "items": len(x),
            "seeds": len(runs),
            **curves,
            "step_seconds": sum(sum(r.seconds) / len(r.seconds) for _, r in runs) / len(runs),
            "first": [runs[0][1].candidates.names[int(c)] for c in runs[0][1].order[0, :3]],
        }
        records.append(record)
        main_metric = "rmse" if "rmse" in curves else "accuracy"
        print(f"{name} {strategy}: {main_metric} {[round(a, 3) for a in curves[main_metric]]}", flush=True)
    return records


def table_markdown(records: list[dict], metric: str, steps_shown: list[int], lower: bool) -> list[str]:
    head = (
        "| strategy | items | "
        + " | ".join(f"t={t}" for t in steps_shown)
        + f" | AUIC ({'lower' if lower else 'higher'} is better) | s per step |"
    )
    lines = [head, "|" + " --- |" * (len(steps_shown) + 4)]
    for r in records:
        if metric not in r:
            continue
        curve = r[metric]
        cells = " | ".join(f"{curve[t]:.3f}" for t in steps_shown if t < len(curve))
        time_cell = f"{r['step_seconds']:.2f}" if "step_seconds" in r else ""
        lines.append(f"| {r['strategy']} | {r['items']} | {cells} | {auic(curve):.3f} | {time_cell} |")
    return lines


def plot(records: list[dict], dataset: str, metrics: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for r in records:
            if metric not in r:
                continue
            style = "--" if r["strategy"] == "full image" else "-"
            label = f"{r['strategy']} ({r['items']})" if r["items"] != records[0]["items"] else r["strategy"]
            ax.plot(
                range(len(r[metric])),
                r[metric],
                style,
                marker="o" if style == "-" else None,
                ms=3,
                label=label,
            )
        ax.set_xlabel("glimpses" if dataset in IMAGES else "features acquired")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"information curves: {dataset}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def report(records: list[dict], args: argparse.Namespace) -> None:
    print(f"\nMachine: {machine()}; command: python benchmarks/design.py {' '.join(sys.argv[1:])}\n")
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        steps = len(rows[0].get("accuracy", rows[0].get("rmse", []))) - 1
        shown = list(range(steps + 1)) if steps <= 8 else sorted({0, 1, 2, 3, 5, 8, steps // 2, steps})
        metrics = ["accuracy", "nll"] if "accuracy" in rows[0] else ["rmse", "coverage"]
        for metric in metrics:
            print(f"\n### {dataset}: {metric} after t steps\n")
            print("\n".join(table_markdown(rows, metric, shown, lower=metric in ("nll", "rmse"))))
        if dataset in IMAGES:
            print(f"\n### {dataset}: accuracy of the classifier averaged over the completions\n")
            completed = [{**r, "accuracy": r["completed"]["accuracy"]} for r in rows if "completed" in r]
            print("\n".join(table_markdown(completed, "accuracy", shown, lower=False)))
        plot(rows, dataset, metrics, Path(args.plots) / f"{dataset}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join([*IMAGES, *TABLES]))
    parser.add_argument("--images", type=int, default=1000, help="test images per image dataset")
    parser.add_argument(
        "--per-query", type=int, default=100, help="images for the gvi and mixture strategies"
    )
    parser.add_argument("--steps", type=int, default=8, help="glimpses per image")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the timing's cores)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--plots", default="docs/design", help="where the information curves go")
    parser.add_argument("--json", help="also write every record here")
    parser.add_argument("--merge", nargs="*", default=[], help="records of other runs (--json files) to add")
    parser.add_argument("--quick", action="store_true", help="100 images, 3 steps, no per-query methods")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.steps = 100, 3
    records = [r for path in args.merge for r in json.loads(Path(path).read_text())]
    for dataset in [d for d in args.datasets.split(",") if d]:
        records += run_images(dataset, args) if dataset in IMAGES else run_table(dataset, args)
        if args.json:
            Path(args.json).write_text(json.dumps(records))
    report(records, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
