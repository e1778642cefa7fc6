"""Experimental design: does EIG under a conditioned VAE choose better glimpses and features?

    python benchmarks/design.py                     # all: the tables and plots of docs/benchmarks.md
    python benchmarks/design.py --quick             # 100 images, 3 steps (smoke test)
    python benchmarks/design.py --datasets wine --strategies ipa,sing --json wine.json

Images (MNIST with ``mnist-hier-z28``, Fashion-MNIST with ``fashion-conv-z32``): the first
``--images`` test images (MNIST binarised as its Bernoulli VAE sees it), 4x4 glimpses on the
7 x 7 grid, ``--steps`` glimpses from no evidence, 16 completions per step. After each glimpse the
bundled partial-image classifier predicts the class from what has been seen; accuracy and NLL of
that prediction against the number of glimpses are the information curves, and "full image" is
the same classifier on the whole image (the bound). Strategies: EIG with ``ipa`` and with
``ipa-r`` completions, EIG with completions replaced by random training images
(``unconditional``), random glimpses (``random``), one fixed order chosen on 200 training images
(``sing``), and EIG with per-query ``gvi`` completions on the first ``--per-query`` images
(compare it with "ipa (same images)": ipa's curve on those images), and ``ipa@64``: ipa with 64
completions per image and step instead of 16 (how much of the gap to the others is Monte Carlo
error in the EIG).

Tables (breast cancer and wine with class targets, diabetes with a continuous one; their bundled
VAEs and partial encoders): every test row, every feature acquired one at a time, 256
completions per step, EDDI's latent-space EIG towards the target. The target is predicted from
the conditioned VAE (the strategy's method, ``ipa`` for the baselines): accuracy and NLL of the
class probabilities, or the RMSE of the posterior mean in the target's units and the coverage of
the 90 % interval. Each strategy runs with ``--seeds`` seeds (``gvi`` with 2) and the curves
are averaged over them.

AUIC is the area under the information curve over 0..T steps divided by T (trapezoid): the
average accuracy (higher is better), NLL or RMSE (lower is better) over the run. "vs ipa" is the
paired difference of the per-item AUIC from ipa's on the same items, with its standard error
over items (for RMSE: of the squared error's AUIC). The time per design step is for all the
items together: completions, EIG of every candidate, the choice.
"""

from __future__ import annotations

import argparse
import json
import math
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
IMAGE_STRATEGIES = ["ipa", "ipa-r", "unconditional", "random", "sing", "gvi", "ipa@64"]
TABLE_STRATEGIES = ["ipa", "gvi", "unconditional", "random", "sing"]
PER_QUERY = {"gvi", "mixture"}
# per-row metric -> (curve name, how the curve is made from the rows' mean, lower is better)
CURVES = {
    "correct": ("accuracy", lambda m: m, False),
    "nll": ("nll", lambda m: m, True),
    "sq_error": ("rmse", math.sqrt, True),
    "covered": ("coverage", lambda m: m, False),
}


def area(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under curves ``[..., T + 1]`` over 0..T, divided by T."""
    return ((curve[..., 1:] + curve[..., :-1]) / 2).mean(-1)


def class_rows(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per item and step ``[B, T + 1]``: 1 if the likeliest class is right, and the NLL."""
    picked = probs.gather(-1, labels.view(-1, 1, 1).expand(-1, probs.shape[1], 1))[..., 0]
    return {
        "correct": (probs.argmax(-1) == labels[:, None]).double(),
        "nll": -picked.clamp_min(1e-12).log().double(),
    }


def record(dataset: str, strategy: str, rows: dict[str, torch.Tensor], **extra: object) -> dict:
    return {
        "dataset": dataset,
        "strategy": strategy,
        "items": len(next(iter(rows.values()))),
        "rows": {k: v.tolist() for k, v in rows.items()},
        **extra,
    }


def run_images(dataset: str, args: argparse.Namespace, strategies: list[str], emit) -> None:
    model = IMAGES[dataset]
    test = load_dataset(dataset, "test", args.data_dir)
    x, labels = test.x[: args.images], test.labels[: args.images]
    prob = problem(model, patch=4, data_dir=args.data_dir)
    if prob.vae.likelihood.name == "bernoulli":
        x = fixed_binarize(x)
    if "full image" in strategies:
        with torch.no_grad():
            full = prob.classifier(x, torch.ones_like(x, dtype=torch.bool)).softmax(-1)
        emit(
            record(
                dataset,
                "full image",
                {k: v.expand(-1, args.steps + 1) for k, v in class_rows(full[:, None], labels).items()},
            )
        )
    train = training_items(prob)
    for name in [s for s in strategies if s != "full image"]:
        strategy, _, many = name.partition("@")  # "ipa@64": ipa with 64 completions
        completions = int(many or 16)
        n = min(args.per_query, len(x)) if strategy in PER_QUERY else len(x)
        started = time.perf_counter()
        order = sing_order(prob, train, args.steps, completions) if strategy == "sing" else None
        result = design(
            prob,
            x[:n],
            steps=args.steps,
            strategy=strategy,
            completions=completions,
            train=train,
            order=order,
        )
        rows = class_rows(result.predictions["probs"], labels[:n])
        completed = class_rows(result.predictions["probs_completed"], labels[:n])
        rows |= {f"{k}_completed": v for k, v in completed.items()}
        step = sum(result.seconds) / len(result.seconds)
        emit(record(dataset, name, rows, step_seconds=step, seconds=time.perf_counter() - started))
        print(
            f"{dataset} {name} ({n} images): accuracy "
            f"{[round(a, 3) for a in rows['correct'].mean(0).tolist()]}, {step:.2f} s per step",
            flush=True,
        )


def run_table(name: str, args: argparse.Namespace, strategies: list[str], emit) -> None:
    prob = problem(TABLES[name])
    vae = prob.vae
    rows_raw = load_table(f"{name}+target", "test")
    x = vae.to_model(rows_raw.x)
    truth = torch.as_tensor(rows_raw.target, dtype=torch.float64)
    steps = 3 if args.quick else len(prob.candidates)
    train = training_items(prob)
    spec = vae.columns[vae.column_names.index("target")]
    for strategy in strategies:
        seeds = range(min(args.seeds, 2) if strategy in PER_QUERY else args.seeds)
        runs, seconds = [], []
        started = time.perf_counter()
        for seed in seeds:
            order = (
                sing_order(prob, train, steps, args.completions, items=len(train), seed=seed)
                if strategy == "sing"
                else None
            )
            result = design(
                prob,
                x,
                steps=steps,
                strategy=strategy,
                completions=args.completions,
                train=train,
                order=order,
                seed=seed,
            )
            pred = result.predictions
            if spec["kind"] == "gaussian":
                inside = (pred["target_low"] <= truth[:, None]) & (truth[:, None] <= pred["target_high"])
                runs.append(
                    {"sq_error": (pred["target_mean"] - truth[:, None]) ** 2, "covered": inside.double()}
                )
            else:
                codes = torch.tensor([spec["values"].index(v) for v in rows_raw.target.tolist()])
                runs.append(class_rows(pred["target_probs"], codes))
            seconds.append(sum(result.seconds) / len(result.seconds))
        rows = {k: torch.stack([r[k] for r in runs]).mean(0) for k in runs[0]}
        emit(
            record(
                name,
                strategy,
                rows,
                seeds=len(runs),
                step_seconds=sum(seconds) / len(seconds),
                seconds=time.perf_counter() - started,
            )
        )
        first = "rmse" if "sq_error" in rows else "accuracy"
        print(f"{name} {strategy}: {first} AUIC {float(area(curve(rows, first))):.3f}", flush=True)


def curve(rows: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The information curve ``name`` (accuracy, nll, rmse, coverage) from per-item rows."""
    key = next(k for k, (c, _, _) in CURVES.items() if c == name)
    make = CURVES[key][1]
    return torch.tensor([make(float(v)) for v in rows[key].mean(0)])


def markdown(records: list[dict], key: str, shown: list[int]) -> list[str]:
    """One table: the curve at the steps ``shown``, its AUIC, the paired difference from ipa."""
    name, _, lower = CURVES[key.removesuffix("_completed")]
    ipa = next((r for r in records if r["strategy"] == "ipa"), None)
    steps = " | ".join(f"t={t}" for t in shown)
    better = "lower" if lower else "higher"
    head = f"| strategy | items | {steps} | AUIC ({better} is better) | vs ipa (s.e.) | s per step |"
    lines = [head, "|" + " --- |" * (len(shown) + 5)]
    for r in records:
        if key not in r["rows"]:
            continue
        rows = torch.tensor(r["rows"][key])
        values = curve({key.removesuffix("_completed"): rows}, name)
        paired = ""
        bound = r["strategy"] == "full image"
        if ipa is not None and r is not ipa and not r.get("same") and not bound and key in ipa["rows"]:
            diff = area(rows) - area(torch.tensor(ipa["rows"][key])[: len(rows)])
            paired = f"{float(diff.mean()):+.3f} ({float(diff.std() / math.sqrt(len(diff))):.3f})"
        cells = " | ".join(f"{float(values[t]):.3f}" for t in shown)
        seconds = f"{r['step_seconds']:.2f}" if "step_seconds" in r else ""
        lines.append(
            f"| {r['strategy']} | {r['items']} | {cells} | {float(area(values)):.3f} | {paired} | {seconds} |"
        )
    return lines


def with_same_items(records: list[dict]) -> list[dict]:
    """Adds "ipa (same items)" beside each strategy run on fewer items than ipa."""
    ipa = next((r for r in records if r["strategy"] == "ipa"), None)
    out = []
    for r in records:
        out.append(r)
        if ipa is not None and r["items"] < ipa["items"] and r["strategy"] != "ipa":
            rows = {k: v[: r["items"]] for k, v in ipa["rows"].items()}
            out.append(
                {
                    **ipa,
                    "strategy": f"ipa (same {r['items']} items)",
                    "items": r["items"],
                    "rows": rows,
                    "same": True,
                }
            )
    return out


def plot(records: list[dict], dataset: str, keys: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        name = CURVES[key][0]
        for r in records:
            if key not in r["rows"] or r.get("same"):
                continue
            values = curve({key: torch.tensor(r["rows"][key])}, name)
            style = "--" if r["strategy"] == "full image" else "-"
            label = r["strategy"] + (f" ({r['items']})" if r["items"] != records[0]["items"] else "")
            ax.plot(
                range(len(values)),
                values.numpy(),
                style,
                marker="o" if style == "-" else None,
                ms=3,
                label=label,
            )
        ax.set_xlabel("glimpses" if dataset in IMAGES else "features acquired")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"information curves: {dataset}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def report(records: list[dict], plots: Path) -> None:
    print(f"\nMachine: {machine()}\n")
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = with_same_items([r for r in records if r["dataset"] == dataset])
        steps = len(next(iter(rows[0]["rows"].values()))[0]) - 1
        shown = list(range(steps + 1)) if steps <= 8 else sorted({0, 1, 2, 3, 5, 8, steps // 2, steps})
        keys = ["correct", "nll"] if "correct" in rows[0]["rows"] else ["sq_error", "covered"]
        for key in keys:
            print(f"\n#### {dataset}: {CURVES[key][0]} after t steps\n")
            print("\n".join(markdown(rows, key, shown)))
        if dataset in IMAGES:
            print(f"\n#### {dataset}: accuracy of the classifier averaged over the completions\n")
            print("\n".join(markdown(rows, "correct_completed", shown)))
        plot(rows, dataset, keys, plots / f"{dataset}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join([*IMAGES, *TABLES]))
    parser.add_argument("--strategies", help="default: every strategy of the dataset's kind")
    parser.add_argument("--images", type=int, default=1000, help="test images per image dataset")
    parser.add_argument("--per-query", type=int, default=100, help="images for the per-query strategies")
    parser.add_argument("--steps", type=int, default=8, help="glimpses per image")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per table strategy")
    parser.add_argument("--completions", type=int, default=256, help="completions per table row and step")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the timing's cores)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--plots", default="docs/design", help="where the information curves go")
    parser.add_argument("--json", help="write every record here as it is made")
    parser.add_argument("--merge", nargs="*", default=[], help="records of other runs (--json files) to add")
    parser.add_argument("--quick", action="store_true", help="100 images, 3 steps, one seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.steps, args.seeds, args.per_query = 100, 3, 1, 20
    records = [r for path in args.merge for r in json.loads(Path(path).read_text())]

    def emit(r: dict) -> None:
        records.append(r)
        if args.json:
            Path(args.json).write_text(json.dumps(records))

    for dataset in [d for d in args.datasets.split(",") if d]:
        image = dataset in IMAGES
        default = ["full image", *IMAGE_STRATEGIES] if image else TABLE_STRATEGIES
        strategies = args.strategies.split(",") if args.strategies else default
        (run_images if image else run_table)(dataset, args, strategies, emit)
    report(records, Path(args.plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
