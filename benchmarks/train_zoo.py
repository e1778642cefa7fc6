"""Retrain the bundled zoo (or a --quick subset) and print test ELBO / IW-NLL / training time.

    python benchmarks/train_zoo.py                 # every recipe, full length (CPU: hours)
    python benchmarks/train_zoo.py --quick         # a few epochs each, k=100 on 1000 images
    python benchmarks/train_zoo.py --only mnist-mlp-z2 --publish   # refresh a bundled model

Each run uses exactly the recipe's ``condvae train`` arguments (recipes.py), so the
figures reproduce the model cards. ``--publish`` copies the trained model into
src/condvae/pretrained/<name>/ with its measured scores written into the card.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from common import machine
from recipes import RECIPES, Recipe

from condvae.cli import main as cli_main
from condvae.data.tables import load_table
from condvae.evaluate import evaluate_dataset
from condvae.models import TabularVAE
from condvae.store import VAES, from_pretrained, save_pretrained
from condvae.train import baseline_log_likelihood


def run_recipe(recipe: Recipe, root: Path, quick: bool, resume: bool, data_dir: str | None) -> dict:
    out = root / recipe.name
    args = [*recipe.train_args]
    if quick:
        args += recipe.quick_args
    if data_dir:
        args += ["--data-dir", data_dir]
    args += ["--out", str(out)]
    if resume and (out / "checkpoint.safetensors").exists():
        args.append("--resume")
    elif out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    if cli_main(["train", *args]) != 0:
        raise SystemExit(f"training {recipe.name} failed")
    model = from_pretrained(out / "model")
    k, limit = (100, 1000) if quick else (recipe.eval_k, recipe.eval_limit)
    scores = evaluate_dataset(model, k=k, limit=limit, data_dir=data_dir)
    return {
        "name": recipe.name,
        "model": model,
        "out": out,
        "train_s": model.card["training"]["training_seconds"],
        "wall_s": time.perf_counter() - started,
        **scores,
    }


def publish(row: dict, recipe: Recipe) -> Path:
    model = row["model"]
    card = dict(model.card)
    card["name"] = recipe.name
    card["description"] = recipe.description
    card["command"] = recipe.train_command(f"runs/{recipe.name}")
    card["evaluation_command"] = recipe.eval_command(recipe.name)
    card["usage"] = f'import condvae\nvae = condvae.load("{recipe.name}")'

    split = f"test split, {row['images']} {'rows' if isinstance(model, TabularVAE) else 'images'}"
    card["metrics"] = {
        f"test ELBO (nats, {split})": round(row["elbo"], 2),
        f"test IW-NLL (nats, k={row['k']}, {split})": round(row["iw_nll"], 2),
        "training time (s)": row["train_s"],
    }
    if isinstance(model, TabularVAE):  # the trivial baseline it must beat, on the same test rows
        dataset = model.card["dataset"]
        train_x, test_x = (model.to_model(load_table(dataset, s).x) for s in ("train", "test"))
        base = float(baseline_log_likelihood(model.columns, train_x, test_x).mean())
        card["metrics"][f"test log-lik of the baseline (nats, independent columns, {split})"] = round(base, 2)
    card["machine"] = machine()
    if model.likelihood.name == "bernoulli":
        card["notes"] = (
            "Trained on dynamically binarised images; scored on the fixed seeded "
            "binarisation of the test split (condvae.data.fixed_binarize, seed 0)."
        )
    target = VAES.directory / recipe.name
    return save_pretrained(model, target, card=card)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs each, k=100 on 1000 images")
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(RECIPES))
    parser.add_argument("--root", default="runs/zoo", help="where the runs go")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs in --root")
    parser.add_argument("--publish", action="store_true", help="write the models into the package")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    names = args.only or list(RECIPES)
    rows = []
    for name in names:
        row = run_recipe(RECIPES[name], Path(args.root), args.quick, args.resume, args.data_dir)
        rows.append(row)
        if args.publish:
            print(f"published {publish(row, RECIPES[name])}")
    print(f"\n{machine()}{' (quick)' if args.quick else ''}")
    print("| model | test images | ELBO (nats) | IW-NLL (nats) | k | train time (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [
            r["name"],
            r["images"],
            f"{r['elbo']:.2f}",
            f"{r['iw_nll']:.2f}",
            r["k"],
            f"{r['train_s']:.0f}",
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
