"""Imputation of tables with missing values: condvae's imputer against scikit-learn's and hyperimpute's.

    python benchmarks/imputation.py                  # the table and plot in docs/benchmarks.md
    python benchmarks/imputation.py --quick          # one dataset, one rate, two seeds (smoke test)
    python benchmarks/imputation.py --split valid    # tuning: score on the validation split, not test
    python benchmarks/imputation.py --hyperimpute-python /tmp/hiv/bin/python   # + hyperimpute's plugins

Tables (``condvae.data.tables``): breast cancer (30 features), diabetes (10 features and the
target as one table), wine (13 features), each with its fixed train / valid / test split. Every
column is standardised with the *training* rows' mean and standard deviation, so RMSEs are in
standard deviations. Missingness is drawn per entry in the training and the evaluation rows:
MCAR at 10, 30 and 50 %, and MNAR at 30 % (a value above its column's training median is
hidden with twice the odds of one below: odds(p_hi) = 2 odds(p_lo), (p_lo + p_hi) / 2 = rate),
with ``--seeds`` mask seeds. A column left with no observed training value is redrawn.

Every imputer is fitted on the incomplete training rows and imputes the incomplete evaluation
rows (test split; ``--split valid`` to tune). Scores, on the hidden evaluation entries:

- RMSE = sqrt(mean (x_hat - x)^2) over the hidden standardised entries;
- coverage of the central 90 % interval: the fraction of hidden entries inside the 5 % and 95 %
  quantiles (positions p (n + 1), unbiased for exchangeable draws) of ``--draws`` imputations
  (condvae: ``CondVAEImputer.sample``; IterativeImputer with ``sample_posterior=True``:
  ``--mi-draws`` transforms of one fit; its RMSE is that of their mean).

Runs can be split and merged: ``--imputers hyperimpute --json a.json`` in one process,
``--json b.json`` in another, then ``--imputers none --merge a.json b.json`` prints the table
and draws the plot of both (records of seeds >= ``--seeds`` are dropped).

Imputers: ``condvae`` (``CondVAEImputer`` trained on the incomplete rows themselves, MIWAE),
``condvae-complete`` (the same trained on the complete training rows, mask-free: the ceiling
that training on holes is measured against), ``mean`` (SimpleImputer), ``knn`` (KNNImputer,
5 neighbours), ``iterative`` (IterativeImputer, BayesianRidge, 10 rounds), ``iterative-mi``
(sample_posterior=True), and hyperimpute's ``miwae``, ``gain`` and ``hyperimpute`` plugins
(default settings) when ``--hyperimpute-python`` names a Python that has hyperimpute (it runs
in a separate process: its pins conflict with condvae's environment).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DATASETS = {"breast_cancer": False, "diabetes": True, "wine": False}  # name -> with_target
PATTERNS = [("mcar", 0.1), ("mcar", 0.3), ("mcar", 0.5), ("mnar", 0.3)]
HYPERIMPUTE = ("miwae", "gain", "hyperimpute")
# condvae's settings, chosen on the validation split (see docs/benchmarks.md, "Imputation")
CONDVAE = {
    "latent_dim": 8,
    "hidden": (128, 128),
    "epochs": 400,
    "batch_size": 64,
    "importance_samples": 20,
    "validation_fraction": 0.0,
    "method": "importance",
    "method_options": {"particles": 1000},
    "n_draws": 100,
}


def mnar_probabilities(rate: float, odds_ratio: float = 2.0) -> tuple[float, float]:
    """(p_lo, p_hi) with odds(p_hi) = odds_ratio * odds(p_lo) and mean ``rate`` (bisection)."""
    lo, hi = 0.0, rate
    for _ in range(60):
        p_lo = (lo + hi) / 2
        odds = odds_ratio * p_lo / (1 - p_lo)
        p_hi = odds / (1 + odds)
        lo, hi = (p_lo, hi) if (p_lo + p_hi) / 2 < rate else (lo, p_lo)
    return p_lo, p_hi


def draw_mask(
    x: np.ndarray, pattern: str, rate: float, median: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """True = hidden. MCAR: each entry with probability ``rate``; MNAR: see the module."""
    u = rng.random(x.shape)
    if pattern == "mcar":
        return u < rate
    p_lo, p_hi = mnar_probabilities(rate)
    return u < np.where(x > median, p_hi, p_lo)


def load(name: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Standardised (train, evaluation) rows of a bundled table, with training statistics."""
    from condvae.data.tables import load_table

    with_target = DATASETS[name]
    train = load_table(name, "train", with_target=with_target)
    held = load_table(name, split, with_target=with_target)
    mu, sd = train.x.mean(0), train.x.std(0)
    return (train.x - mu) / sd, (held.x - mu) / sd, train.columns


def settings(name: str, split: str, seeds: int, patterns: list[tuple[str, float]]):
    """Every (pattern, rate, seed) with its masked training and evaluation rows."""
    train, held, _ = load(name, split)
    median = np.median(train, 0)
    for pattern, rate in patterns:
        for seed in range(seeds):
            rng = np.random.default_rng([seed, int(rate * 100), pattern == "mnar"])
            while True:  # a column with nothing observed in training cannot be learnt by anyone
                m_train = draw_mask(train, pattern, rate, median, rng)
                if not m_train.all(0).any():
                    break
            m_held = draw_mask(held, pattern, rate, median, rng)
            yield pattern, rate, seed, train, m_train, held, m_held


def with_nan(x: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[hidden] = np.nan
    return out


def coverage(draws: np.ndarray, truth: np.ndarray, hidden: np.ndarray) -> float:
    """Fraction of hidden entries inside the 5 %-95 % quantiles of ``draws`` ``[n, N, D]``.

    Quantiles at positions p (n + 1) of the sorted draws ("weibull"): for a truth exchangeable
    with the n draws, P(truth < x_(k)) = k / (n + 1), so the interval covers 90 % in
    expectation at any n (numpy's default interpolation would cover about 81 % at n = 20 and
    88 % at n = 100 even for a perfectly calibrated imputer).
    """
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0, method="weibull")
    inside = (truth >= lo) & (truth <= hi)
    return float(inside[hidden].mean())


def rmse(x_hat: np.ndarray, truth: np.ndarray, hidden: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x_hat[hidden] - truth[hidden]) ** 2)))


def sklearn_imputers(
    x_train: np.ndarray, x_held: np.ndarray, truth: np.ndarray, hidden: np.ndarray, mi_draws: int, seed: int
) -> dict[str, dict[str, float]]:
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    rows: dict[str, dict[str, float]] = {}
    for name, imputer in (
        ("mean", SimpleImputer()),
        ("knn", KNNImputer(n_neighbors=5)),
        ("iterative", IterativeImputer(max_iter=10, random_state=seed)),
    ):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # IterativeImputer's "did not converge"
            x_hat = imputer.fit(x_train).transform(x_held)
        rows[name] = {"rmse": rmse(x_hat, truth, hidden), "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    # One fit, then mi_draws transforms: each transform draws afresh from the fitted chain (its
    # random_state_ advances), with BayesianRidge's predictive spread; refitting per draw
    # would add the spread of the fits themselves but cost mi_draws fits (too slow here)
    imputer = IterativeImputer(max_iter=10, sample_posterior=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer.fit(x_train)
        stack = np.stack([imputer.transform(x_held) for _ in range(mi_draws)])
    rows["iterative-mi"] = {
        "rmse": rmse(stack.mean(0), truth, hidden),
        "coverage": coverage(stack, truth, hidden),
        "seconds": time.perf_counter() - start,
    }
    return rows


def condvae_imputer(
    fit_rows: np.ndarray,
    x_held: np.ndarray,
    truth: np.ndarray,
    hidden: np.ndarray,
    draws: int,
    seed: int,
    params: dict,
    cache: dict | None = None,
) -> dict[str, float]:
    """Fit (or take from ``cache``, keyed by seed: the complete-rows model is mask-free) and score."""
    from condvae.impute import CondVAEImputer

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # train_vae's baseline warning, low-ESS warnings
        if cache is not None and seed in cache:
            imputer = cache[seed]
        else:
            imputer = CondVAEImputer(**{**params, "random_state": seed}).fit(fit_rows)
            if cache is not None:
                cache[seed] = imputer
        x_hat = imputer.transform(x_held)
        sample = imputer.sample(x_held, draws)
    return {
        "rmse": rmse(x_hat, truth, hidden),
        "coverage": coverage(sample, truth, hidden),
        "seconds": time.perf_counter() - start,
    }


def hyperimpute_worker(path: str) -> None:
    """In hyperimpute's Python: impute every setting saved in ``path`` (npz), write ``path``.json."""
    import pandas as pd
    from hyperimpute.plugins.imputers import Imputers

    data = np.load(path)
    out: dict[str, dict[str, list[float]]] = {}
    for key in sorted({k.rsplit("/", 1)[0] for k in data.files}):
        x_train, x_held = data[f"{key}/train"], data[f"{key}/held"]
        for plugin in HYPERIMPUTE:
            start = time.perf_counter()
            try:
                imputer = Imputers().get(plugin, random_state=0)
                imputer.fit(pd.DataFrame(x_train))
                x_hat = np.asarray(imputer.transform(pd.DataFrame(x_held)), dtype=np.float64)
                out.setdefault(key, {})[plugin] = [*x_hat.ravel().tolist(), time.perf_counter() - start]
            except Exception as exc:  # reported, not fatal: the other imputers still count
                out.setdefault(key, {})[plugin] = [f"{type(exc).__name__}: {exc}"]  # type: ignore[list-item]
    Path(path + ".json").write_text(json.dumps(out))


def run_hyperimpute(python: str, jobs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "jobs.npz")
        arrays = {f"{k}/train": v[0] for k, v in jobs.items()} | {f"{k}/held": v[1] for k, v in jobs.items()}
        np.savez(path, **arrays)
        done = subprocess.run(
            [python, "-W", "ignore", __file__, "--worker", path], capture_output=True, text=True, check=False
        )
        if done.returncode:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            print(f"hyperimpute: the worker failed ({tail[0]})", file=sys.stderr)
            return {}
        return json.loads(Path(path + ".json").read_text())


def summarise(records: list[dict]) -> dict[tuple, dict[str, float]]:
    """(dataset, pattern, rate, method) -> mean and standard deviation over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["pattern"], r["rate"], r["method"]), []).append(r)
    out = {}
    for key, rows in groups.items():
        entry = {}
        for metric in ("rmse", "coverage", "seconds"):
            values = [r[metric] for r in rows if r.get(metric) is not None]
            if values:
                entry[metric] = float(np.mean(values))
                entry[metric + "_sd"] = float(np.std(values))
        entry["seeds"] = len(rows)
        out[key] = entry
    return out


def table(summary: dict[tuple, dict[str, float]], methods: list[str]) -> str:
    lines = [
        "| dataset | missing | " + " | ".join(methods) + " |",
        "| --- | --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    keys = sorted({k[:3] for k in summary}, key=lambda k: (list(DATASETS).index(k[0]), k[1], k[2]))
    for dataset, pattern, rate in keys:
        cells = []
        for m in methods:
            e = summary.get((dataset, pattern, rate, m))
            if not e or "rmse" not in e:
                cells.append("n/a")
                continue
            cell = f"{e['rmse']:.3f} ± {e['rmse_sd']:.3f}"
            if "coverage" in e:
                cell += f" ({e['coverage']:.2f})"
            cells.append(cell)
        lines.append(f"| {dataset} | {pattern.upper()} {rate:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict[tuple, dict[str, float]], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(k[0] == d for k in summary)]
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6.4), squeeze=False)
    for col, dataset in enumerate(datasets):
        for m in methods:
            rates = sorted(k[2] for k in summary if k[0] == dataset and k[1] == "mcar" and k[3] == m)
            if not rates:
                continue
            es = [summary[(dataset, "mcar", r, m)] for r in rates]
            axes[0, col].errorbar(
                [100 * r for r in rates], [e["rmse"] for e in es], yerr=[e["rmse_sd"] for e in es],
                marker="o", capsize=3, label=m, color=f"C{methods.index(m)}",
            )  # fmt: skip
            if all("coverage" in e for e in es):
                axes[1, col].plot(
                    [100 * r for r in rates],
                    [e["coverage"] for e in es],
                    marker="o",
                    label=m,
                    color=f"C{methods.index(m)}",
                )  # one colour per method in both rows
        axes[0, col].set_title(f"{dataset} (MCAR)")
        axes[0, col].set_ylabel("RMSE on hidden entries (sd units)")
        axes[1, col].axhspan(0.87, 0.93, color="0.9")
        axes[1, col].axhline(0.9, color="0.5", lw=0.8)
        axes[1, col].set_ylabel("90% interval coverage")
        axes[1, col].set_xlabel("% missing")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--seeds", type=int, default=5, help="mask seeds per setting")
    parser.add_argument("--patterns", default="mcar:0.1,mcar:0.3,mcar:0.5,mnar:0.3")
    parser.add_argument("--draws", type=int, default=100, help="condvae draws for the intervals")
    parser.add_argument(
        "--mi-draws", type=int, default=20, help="IterativeImputer(sample_posterior) imputations"
    )
    parser.add_argument("--condvae", default="{}", help="JSON overrides of condvae's settings")
    parser.add_argument("--no-complete", action="store_true", help="skip condvae trained on complete rows")
    parser.add_argument("--hyperimpute-python", help="a Python with hyperimpute installed")
    parser.add_argument("--out", default="docs/imputation/imputation.png", help="the plot")
    parser.add_argument("--json", help="also write every record here")
    parser.add_argument("--imputers", default="condvae,sklearn", help="groups: condvae, sklearn, hyperimpute")
    parser.add_argument("--merge", nargs="*", default=[], help="records (--json files) of other runs to add")
    parser.add_argument("--quick", action="store_true", help="breast cancer, 30%% MCAR, 2 seeds, 30 epochs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        hyperimpute_worker(args.worker)
        return

    import torch
    from common import machine

    torch.set_num_threads(1)  # small networks: one thread is faster than two fighting (measured)
    params = {**CONDVAE, **json.loads(args.condvae)}
    patterns = [(p.split(":")[0], float(p.split(":")[1])) for p in args.patterns.split(",")]
    datasets = args.datasets.split(",")
    if args.quick:
        datasets, patterns, args.seeds, args.mi_draws = ["breast_cancer"], [("mcar", 0.3)], 2, 5
        params["epochs"], params["patience"] = 30, 0
    started = time.perf_counter()
    groups = set(args.imputers.split(",")) | ({"hyperimpute"} if args.hyperimpute_python else set())
    merged = [r for path in args.merge for r in json.loads(Path(path).read_text())]
    records: list[dict] = [r for r in merged if r["seed"] < args.seeds]  # the same seeds for all
    datasets = [] if args.merge and args.imputers == "none" else datasets
    for dataset in datasets:
        jobs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        truths: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        complete_fit: dict[int, object] = {}  # seed -> imputer fitted on complete rows
        for pattern, rate, seed, train, m_train, held, m_held in settings(
            dataset, args.split, args.seeds, patterns
        ):
            x_train, x_held = with_nan(train, m_train), with_nan(held, m_held)
            base = {"dataset": dataset, "pattern": pattern, "rate": rate, "seed": seed}
            if "sklearn" in groups:
                for method, row in sklearn_imputers(
                    x_train, x_held, held, m_held, args.mi_draws, seed
                ).items():
                    records.append({**base, "method": method, **row})
            if "condvae" in groups:
                row = condvae_imputer(x_train, x_held, held, m_held, args.draws, seed, params)
                records.append({**base, "method": "condvae", **row})
            if "condvae" in groups and not args.no_complete:
                row = condvae_imputer(train, x_held, held, m_held, args.draws, seed, params, complete_fit)
                records.append({**base, "method": "condvae-complete", **row})
            key = f"{pattern}-{rate}-{seed}"
            jobs[key], truths[key] = (x_train, x_held), (held, m_held)
            done = [r for r in records if all(r.get(k) == v for k, v in base.items())]
            scores = ", ".join(f"{r['method']} {r['rmse']:.3f}" for r in done)
            print(f"{dataset} {pattern} {rate:.0%} seed {seed}: {scores}", flush=True)
        if args.hyperimpute_python:
            found = run_hyperimpute(args.hyperimpute_python, jobs)
            for key, plugins in found.items():
                pattern, rate, seed = key.split("-")
                held, m_held = truths[key]
                for plugin, values in plugins.items():
                    base = {"dataset": dataset, "pattern": pattern, "rate": float(rate), "seed": int(seed)}
                    if isinstance(values[0], str):
                        print(f"hyperimpute {plugin} {key}: failed ({values[0]})", file=sys.stderr)
                        continue
                    x_hat = np.asarray(values[:-1]).reshape(held.shape)
                    records.append(
                        {**base, "method": plugin, "rmse": rmse(x_hat, held, m_held), "seconds": values[-1]}
                    )
    summary = summarise(records)
    methods = [
        m
        for m in ["condvae", "condvae-complete", "mean", "knn", "iterative", "iterative-mi", *HYPERIMPUTE]
        if any(k[3] == m for k in summary)
    ]
    print()
    print(f"RMSE on the hidden standardised {args.split} entries, mean ± sd over {args.seeds} mask seeds "
          "(90% interval coverage in brackets)")  # fmt: skip
    print(table(summary, methods))
    print()
    print("seconds per fit and imputation: " + ", ".join(
        f"{m} {np.mean([e['seconds'] for k, e in summary.items() if k[3] == m]):.1f}" for m in methods
    ))  # fmt: skip
    for dataset in DATASETS:
        inc, comp = (
            summary.get((dataset, "mcar", 0.3, "condvae")),
            summary.get((dataset, "mcar", 0.3, "condvae-complete")),
        )
        if inc and comp:
            ratio = inc["rmse"] / comp["rmse"]
            print(f"{dataset}, 30% MCAR: RMSE trained on incomplete rows / on complete rows = {ratio:.3f}")
    print(f"settings: {json.dumps(params)}; draws {args.draws}, IterativeImputer MI draws {args.mi_draws}")
    print(f"machine: {machine()}; {time.perf_counter() - started:.0f} s")
    plot(summary, methods, Path(args.out))
    print(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
