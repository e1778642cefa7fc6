"""Per-query conditioning on MNIST: every method, evidence 5 / 15 / 25 % random pixels.

    python benchmarks/conditioning.py                      # 50 queries, both models, Pyro peers
    python benchmarks/conditioning.py --queries 1000 --no-peers --methods gvi,planar
    python benchmarks/conditioning.py --quick              # 10 queries, short fits (smoke test)

For each model, evidence fraction and method it prints the median C-ELBO, the median query
log-likelihood log (1/500) sum p(y_true | z_m) (the metric of Wu, Domke & Sanner 2018), and the
gap between the model's own log p(y_true | x_o) and the method's log ∫ p(y_true | z) q(z) dz
with 10000 draws (median, mean, 90th percentile and max over queries). The reference is the exact
grid for the 2-d latent, AIS for the 50-d one (with the BDMC sandwich width of its settings on
items simulated from the model). With plain draws from q the estimate is biased low even for
exact posterior draws (by ~1 nat at 5% evidence in 2-d, by tens of nats in 50-d), so in 50-d
the gap of every method that scores arbitrary z uses multiple importance sampling with the
encoder on the whole item as the second proposal (column "gap estimator": MIS, else plain);
and the time per query (fit + 10000 draws) when all
queries are fitted as one batch. The peers (Pyro, optional extra ``pip install pyro-ppl``) fit
one query at a time on the same decoder, evidence and masks: SVI with AutoMultivariateNormal
(the same full-covariance family and step count as ``gvi``), SVI with a 16-layer planar flow
guide, and NUTS; the ratio column is peer time per query over ours at (reported) equal C-ELBO.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import machine

from condvae import condition, load
from condvae.conditioning import sandwich, simulate
from condvae.conditioning.ais import ais_log_evidence
from condvae.data import fixed_binarize, load_dataset
from condvae.errors import ConditioningWarning, CondVAEError
from condvae.metrics import AIS_REFERENCE
from condvae.models import VAE

Z2_METHODS = [
    "grid",
    "meanfield",
    "gvi",
    "planar",
    "spline",
    "mixture",
    "fcn",
    "hmc",
    "importance",
    "rejection",
]
GRADIENT_METHODS = ["meanfield", "gvi", "planar", "spline", "mixture", "hmc", "importance"]
GAP_SAMPLES = 10000  # draws for the gap: the 500-draw estimate is biased low even for exact draws


def make_queries(
    n: int, fraction: float, seed: int, data_dir: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test digits (fixed binarisation), each with its own random pixel mask."""
    x = fixed_binarize(load_dataset("mnist", "test", data_dir).x[:n])
    rng = np.random.default_rng([seed, int(fraction * 1000)])
    mask = torch.from_numpy(rng.random(tuple(x.shape)) < fraction)
    return x, mask


CACHE = Path("runs/reference")
BDMC_ITEMS = 20


def _cached(key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A reference tensor computed once per key and kept under runs/reference/ (not committed)."""
    path = CACHE / f"{key}.pt"
    if path.is_file():
        return torch.load(path)
    value = compute()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(value, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return value


def ais_reference(
    vae: VAE, name: str, x: torch.Tensor, mask: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_true | x_o) and log p(x_o) per query by two AIS runs (AIS_REFERENCE), cached."""
    n, full, part = x.shape[0], AIS_REFERENCE["full"], AIS_REFERENCE["evidence"]
    stem = f"{Path(name).name}-{n}-s{seed}"
    log_px = _cached(
        f"{stem}-full-T{full['temperatures']}-K{full['particles']}",
        lambda: torch.cat([ais_log_evidence(vae, x[i : i + 10], None, **full) for i in range(0, n, 10)]),
    )
    log_po = _cached(
        f"{stem}-f{int(1000 * fraction)}-T{part['temperatures']}-K{part['particles']}",
        lambda: ais_log_evidence(vae, x, mask, **part),
    )
    return log_px - log_po, log_po


def bdmc_widths(vae: VAE, name: str, n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sandwich widths [n] of the two AIS runs of ``ais_reference``, on n items simulated from
    the model with the same kind of mask: for log p(x_o) and for log p(x). Cached."""
    x, z = simulate(vae, n, seed=seed)
    rng = np.random.default_rng([seed, int(fraction * 1000), 1])
    mask = torch.from_numpy(rng.random(tuple(x.shape)) < fraction)
    full, part = AIS_REFERENCE["full"], AIS_REFERENCE["evidence"]
    stem = f"{Path(name).name}-bdmc-{n}-s{seed}"

    def width(m: torch.Tensor | None, options: dict) -> torch.Tensor:
        return sandwich(vae, x, m, z, chains=4, **options).width

    evidence = _cached(f"{stem}-f{int(1000 * fraction)}-T{part['temperatures']}", lambda: width(mask, part))
    whole = _cached(f"{stem}-full-T{full['temperatures']}", lambda: width(None, full))
    return evidence, whole


def query_ll(vae: VAE, x: torch.Tensor, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log (1/n) sum_m p(y_true | z_m) for z [n, B, d], in chunks of draws."""
    parts = [vae.log_likelihood(x, z[i : i + 1000], ~mask) for i in range(0, z.shape[0], 1000)]
    return torch.logsumexp(torch.cat(parts), 0) - math.log(z.shape[0])


def summarise(
    name: str,
    c_elbo: torch.Tensor | None,
    qll: torch.Tensor,
    qll_gap: torch.Tensor,
    exact: torch.Tensor,
    seconds: float,
    n: int,
    log_evidence: torch.Tensor | None = None,
) -> dict:
    gap = (exact - qll_gap).tolist()
    return {
        "method": name,
        "c_elbo": None if c_elbo is None else statistics.median(c_elbo.tolist()),
        "evidence_gap": None
        if c_elbo is None or log_evidence is None
        else float((log_evidence - c_elbo).mean()),
        "qll": statistics.median(qll.tolist()),
        "gap_median": statistics.median(gap),
        "gap_mean": statistics.fmean(gap),
        "gap_p90": float(np.percentile(gap, 90)),
        "gap_max": max(gap),
        "ms_per_query": 1000 * seconds / n,
        "per_query_c_elbo": c_elbo,
    }


def parse_spec(spec: str, quick: bool) -> tuple[str, dict]:
    """``gvi`` or ``gvi:iw=16:samples=16`` -> the method and its options (the defaults below
    for the fits, unless the spec sets them)."""
    method, *pairs = spec.split(":")
    options: dict = {}
    if method in ("gvi", "planar", "spline", "fcn", "meanfield", "mixture"):
        options = {"steps": 100 if quick else 500}
    if method == "hmc":
        options = {"warmup": 100, "draws": 50} if quick else {"warmup": 500, "draws": 250}
    if method == "rejection":
        options = {"budget": 2_000_000}
    for pair in pairs:
        key, value = pair.split("=")
        options[key] = float(value) if "." in value else int(value) if value.lstrip("-").isdigit() else value
    return method, options


def run_ours(
    vae: VAE,
    x: torch.Tensor,
    mask: torch.Tensor,
    spec: str,
    exact: torch.Tensor,
    quick: bool,
    log_evidence: torch.Tensor | None = None,
) -> dict:
    method, options = parse_spec(spec, quick)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConditioningWarning)
            post = condition(vae, x, mask, method=method, **options)
            z = post.sample(GAP_SAMPLES)  # rejection does its work here: count it
    except CondVAEError as exc:
        print(f"  {spec}: {exc}")
        return {"method": spec, "failed": str(exc).split(";")[0]}
    seconds = time.perf_counter() - started
    if method == "auto":
        print(f"  auto: {post.diagnostics.reason}")
    with torch.no_grad():
        c_elbo = post.c_elbo(500) if post.has_density else None
        qll_gap, estimator = query_ll(vae, x, mask, z), "plain"
        if vae.latent_dim > 2:
            proposal = vae.encode(x.to(vae.device))  # the gap's second proposal: the whole item's encoder
            escalated = post.diagnostics.escalated if method == "auto" else []
            scored = post.main if escalated else post
            try:
                mis = scored.query_log_likelihood(x, GAP_SAMPLES, proposal=proposal)
                keep = torch.ones(x.shape[0], dtype=torch.bool)
                keep[escalated] = False
                qll_gap[keep] = mis[keep]
                estimator = f"MIS, plain on the {len(escalated)} escalated" if escalated else "MIS"
            except CondVAEError:  # a method without a density at arbitrary z: plain draws only
                pass
        row = summarise(
            spec, c_elbo, query_ll(vae, x, mask, z[:500]), qll_gap, exact, seconds, x.shape[0], log_evidence
        )
        return row | {"estimator": estimator}


# -- peers ---------------------------------------------------------------------------------
def _pyro_model(vae: VAE, x: torch.Tensor, mask: torch.Tensor):  # type: ignore[no-untyped-def]
    import pyro
    import pyro.distributions as dist

    observed = mask.flatten()
    values = x.flatten()[observed]
    d = vae.latent_dim

    def model() -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        logits = vae.decode(z).logits.reshape(*z.shape[:-1], -1)[..., observed]
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=values)

    return model


def pyro_svi(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, exact: torch.Tensor, guide: str, steps: int
) -> dict:
    import pyro
    from pyro.distributions.transforms import iterated, planar
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormalizingFlow
    from pyro.optim import ClippedAdam

    c_elbos, qlls, gaps, seconds = [], [], [], 0.0
    for i in range(x.shape[0]):
        pyro.clear_param_store()
        pyro.set_rng_seed(i)
        model = _pyro_model(vae, x[i], mask[i])
        if guide == "mvn":
            auto = AutoMultivariateNormal(model)
        else:
            auto = AutoNormalizingFlow(model, lambda dim: iterated(16, planar, dim))
        svi = SVI(
            model, auto, ClippedAdam({"lr": 0.05}), Trace_ELBO(num_particles=16, vectorize_particles=True)
        )
        started = time.perf_counter()
        for _ in range(steps):
            svi.step()
        seconds += time.perf_counter() - started
        with torch.no_grad():
            estimate = Trace_ELBO(num_particles=500, vectorize_particles=True)
            c_elbos.append(-estimate.loss(model, auto))
            zs = auto.get_posterior().sample((GAP_SAMPLES,))[:, None]
            qlls.append(float(query_ll(vae, x[i : i + 1], mask[i : i + 1], zs[:500])[0]))
            gaps.append(float(query_ll(vae, x[i : i + 1], mask[i : i + 1], zs)[0]))
    name = "pyro SVI mvn" if guide == "mvn" else "pyro SVI planar16"
    return summarise(
        name, torch.tensor(c_elbos), torch.tensor(qlls), torch.tensor(gaps), exact, seconds, x.shape[0]
    )


def pyro_nuts(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, exact: torch.Tensor, warmup: int, draws: int
) -> dict:
    import pyro
    from pyro.infer import MCMC, NUTS

    qlls, seconds = [], 0.0
    for i in range(x.shape[0]):
        pyro.set_rng_seed(i)
        mcmc = MCMC(
            NUTS(_pyro_model(vae, x[i], mask[i])),
            num_samples=draws,
            warmup_steps=warmup,
            disable_progbar=True,
        )
        started = time.perf_counter()
        mcmc.run()
        seconds += time.perf_counter() - started
        zs = mcmc.get_samples()["z"][:, None]
        with torch.no_grad():
            qlls.append(float(query_ll(vae, x[i : i + 1], mask[i : i + 1], zs)[0]))
    # NUTS keeps only its draws: the gap uses those (fewer than GAP_SAMPLES, so biased high).
    qll = torch.tensor(qlls)
    return summarise("pyro NUTS", None, qll, qll, exact, seconds, x.shape[0])


def time_fits(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, methods: list[str], name: str, fraction: float
) -> None:
    """Wall time of fitting all queries as one batch (500 steps x 16 draws unless the spec
    says otherwise), nothing else."""
    print(f"\n{name}, {x.shape[0]} queries, {int(100 * fraction)}% observed")
    print("| method | fit time (s) | ms / query | median final C-ELBO |\n| --- | --- | --- | --- |")
    for method in methods:
        name_, options = parse_spec(method, quick=False)
        started = time.perf_counter()
        post = condition(vae, x, mask, method=name_, **{"samples": 16, **options})
        seconds = time.perf_counter() - started
        final = post.diagnostics["final_c_elbo"].median()
        print(f"| {method} | {seconds:.1f} | {1000 * seconds / x.shape[0]:.1f} | {final:.2f} |")
        sys.stdout.flush()


def profile(vae: VAE, x: torch.Tensor, mask: torch.Tensor, steps: int = 100, samples: int = 16) -> None:
    """Where a gvi fit's time goes: the decoder's fast path (forward and backward, as in one
    step) against the whole step, and the fast path's GFLOP/s against a plain matmul of the
    last layer's total size on the same machine (the floor a per-query gather cannot beat)."""
    b = x.shape[0]
    post = condition(vae, x, mask, method="gvi", steps=steps, samples=samples)
    per_step = post.diagnostics.seconds / steps
    query = post.query
    z = torch.randn(samples, b, vae.latent_dim, requires_grad=True)
    rows = query.prepared

    def decoder_step() -> None:
        with torch.enable_grad():
            (-vae.log_likelihood(query.x, z, query.mask, rows).sum()).backward()

    def timed(fn: Callable[[], object], repeats: int = 20) -> float:
        fn()
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    decoder = timed(decoder_step)
    layers = [m for m in vae.decoder if hasattr(m, "weight")]
    width, observed = layers[-1].in_features, rows.index.shape[1] * vae.likelihood.params_per_dim
    flops_last = 2.0 * samples * b * width * observed
    flops_rest = sum(2.0 * samples * b * m.in_features * m.out_features for m in layers[:-1])
    flops = 3 * flops_last + 2 * flops_rest  # backward: inputs' gradients of every layer but the first
    a, w = torch.randn(samples * b, width), torch.randn(width, observed)
    plain = timed(lambda: a @ w)
    print(f"\n{b} queries, {samples} draws, {observed} observed outputs per query (padded), {steps}-step gvi")
    print("| quantity | value |\n| --- | --- |")
    print(f"| fit time per step | {1000 * per_step:.2f} ms |")
    share = f"{100 * decoder / per_step:.0f} % of a step"
    print(f"| decoder fast path, forward + backward | {1000 * decoder:.2f} ms ({share}) |")
    print(f"| outside the decoder | {100 * (1 - decoder / per_step):.0f} % of a step |")
    print(f"| fast path achieved | {flops / decoder / 1e9:.1f} GFLOP/s |")
    shape = f"[{samples * b} x {width}] @ [{width} x {observed}]"
    print(f"| plain matmul {shape} | {flops_last / plain / 1e9:.1f} GFLOP/s |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--fractions", default="0.05,0.15,0.25")
    parser.add_argument("--models", default="mnist-mlp-z2,mnist-mlp-z50")
    parser.add_argument("--methods", default=None, help="comma-separated; default: all that apply")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--peer-queries", type=int, default=5, help="queries the (slow) peers fit")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--timing", action="store_true", help="only time the fits (no metrics, no peers)")
    parser.add_argument("--profile", action="store_true", help="where a gvi fit's time goes (no metrics)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.peer_queries = min(args.queries, 10), min(args.peer_queries, 2)
    torch.manual_seed(args.seed)
    print(f"{machine()}; {args.queries} queries" + (" (quick)" if args.quick else ""))
    for model_name in args.models.split(","):
        vae = load(model_name)
        methods = (
            args.methods.split(",")
            if args.methods
            else (Z2_METHODS if vae.latent_dim == 2 else GRADIENT_METHODS)
        )
        for fraction in [float(f) for f in args.fractions.split(",")]:
            x, mask = make_queries(args.queries, fraction, args.seed, args.data_dir)
            if args.profile:
                profile(vae, x, mask)
                continue
            if args.timing:
                time_fits(vae, x, mask, methods, model_name, fraction)
                continue
            started = time.perf_counter()
            if vae.latent_dim == 2:
                grid = condition(vae, x, mask, method="grid")
                exact, log_evidence = grid.exact_query_log_likelihood(x), grid.log_evidence()
                reference = "exact grid"
            else:
                exact, log_evidence = ais_reference(vae, model_name, x, mask, fraction, args.seed)
                lower, whole = bdmc_widths(vae, model_name, BDMC_ITEMS, fraction, args.seed)
                reference = (
                    f"AIS, {AIS_REFERENCE}; BDMC sandwich width on {BDMC_ITEMS} items simulated from the "
                    f"model: log p(x_o) mean {lower.mean():.3f} (p90 {lower.quantile(0.9):.3f}), "
                    f"log p(x) mean {whole.mean():.3f} (p90 {whole.quantile(0.9):.3f})"
                )
            exact_s = time.perf_counter() - started
            rows = [run_ours(vae, x, mask, m, exact, args.quick, log_evidence) for m in methods]
            if not args.no_peers:
                k = args.peer_queries
                steps = 100 if args.quick else 500
                ours = {r["method"]: r for r in rows if "failed" not in r}
                for guide, match in (("mvn", "gvi"), ("planar", "planar")):
                    peer = pyro_svi(vae, x[:k], mask[:k], exact[:k], guide, steps)
                    peer["method"] += f" ({k} queries)"
                    if match in ours:
                        peer["ratio"] = peer["ms_per_query"] / ours[match]["ms_per_query"]
                        same = ours[match]["per_query_c_elbo"][:k]
                        peer["vs"] = (
                            f"{match} (whose median C-ELBO on these {k} queries is {same.median():.2f})"
                        )
                    rows.append(peer)
                warm, draws = (50, 50) if args.quick else (300, 250)
                peer = pyro_nuts(vae, x[:k], mask[:k], exact[:k], warm, draws)
                if "hmc" in ours:
                    peer["ratio"], peer["vs"] = peer["ms_per_query"] / ours["hmc"]["ms_per_query"], "hmc"
                peer["method"] += f" ({k} queries)"
                rows.append(peer)
            print(
                f"\n### {model_name}, {int(100 * fraction)}% of pixels observed "
                f"(reference: {reference}; {exact_s:.1f} s)\n"
            )
            print(
                "| method | median C-ELBO | log p(x_o) - C-ELBO (mean) | median query LL | gap estimator | "
                "gap median | gap mean | gap p90 | gap max | ms / query | peer / ours |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for r in rows:
                if "failed" in r:
                    print(f"| {r['method']} | failed: {r['failed']} | | | | | | | | | |")
                    continue
                c = "n/a" if r["c_elbo"] is None else f"{r['c_elbo']:.2f}"
                e = "n/a" if r.get("evidence_gap") is None else f"{r['evidence_gap']:.2f}"
                ratio = f"{r['ratio']:.0f}x vs {r['vs']}" if "ratio" in r else ""
                print(
                    f"| {r['method']} | {c} | {e} | {r['qll']:.2f} | {r.get('estimator', 'plain')} | "
                    f"{r['gap_median']:.3f} | "
                    f"{r['gap_mean']:.3f} | {r['gap_p90']:.3f} | {r['gap_max']:.2f} | "
                    f"{r['ms_per_query']:.1f} | {ratio} |"
                )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
