"""Pyro and NumPyro against condvae at equal quality, on the same decoder weights and queries.

    python benchmarks/peers.py --model mnist-mlp-z2 --fraction 0.05 --queries 50 --peer-queries 10

Ours: ``gvi`` (500 Adam steps x 16 draws) fitted to all queries as one batch; its time per
query is the batch's wall time over the number of queries, and each query's C-ELBO is
estimated from 2000 draws. Each peer fits one query at a time with the same family
(AutoMultivariateNormal, Adam at lr 0.05 and 16 particles per step) and runs until its C-ELBO
(estimated from 2000 particles every 25 steps, not timed) reaches ours minus ``--tolerance``
or ``--max-steps`` is spent; the ratio is the peer's time to get there over ours. A peer that
never gets there is reported with its best C-ELBO and a ratio of at least its time over ours.
NumPyro compiles each query's SVI step (its observed pixels are its own shapes): that time is
shown apart, and the ratio both without and with it.

Samplers: our ``hmc`` against NumPyro's NUTS, both with 4 chains per query, compared by the
effective sample size per second (NumPyro's ``effective_sample_size``, the smallest over the
latent coordinates, for both).

Peers are optional extras: ``pip install pyro-ppl numpyro jax[cpu]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch
from common import machine
from conditioning import make_queries

from condvae import condition, load
from condvae.models import VAE


def _decoder_layers(vae: VAE) -> list[tuple[np.ndarray, np.ndarray]]:
    """The MLP decoder's (weight, bias) pairs, ReLU between them, as numpy arrays."""
    return [
        (m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in vae.decoder if hasattr(m, "weight")
    ]


def pyro_to_equal(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, target: float, tolerance: float, max_steps: int
) -> tuple[float, float, int, float]:
    """Seconds of SVI steps until the C-ELBO reaches target - tolerance, the C-ELBO then, steps,
    and the seconds of compilation (none for Pyro)."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoMultivariateNormal
    from pyro.optim import Adam

    observed, values, d = mask.flatten(), x.flatten()[mask.flatten()], vae.latent_dim

    layers = [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in _decoder_layers(vae)]
    index = observed.nonzero().flatten()

    def model() -> None:
        h = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        for i, (w, b) in enumerate(layers):
            last = i == len(layers) - 1  # only the observed pixels' logits, as our fast path
            h = h @ (w[:, index] if last else w) + (b[index] if last else b)
            if not last:
                h = torch.relu(h)
        pyro.sample("x", dist.Bernoulli(logits=h).to_event(1), obs=values)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoMultivariateNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO(num_particles=16, vectorize_particles=True))
    estimate = Trace_ELBO(num_particles=2000, vectorize_particles=True)
    seconds, steps, c_elbo = 0.0, 0, -math.inf
    while steps < max_steps:
        start = time.perf_counter()
        for _ in range(25):
            svi.step()
        seconds += time.perf_counter() - start
        steps += 25
        with torch.no_grad():
            c_elbo = -estimate.loss(model, guide)
        if c_elbo >= target - tolerance:
            break
    return seconds, c_elbo, steps, 0.0


def _numpyro_model(vae: VAE, x: torch.Tensor, mask: torch.Tensor):  # type: ignore[no-untyped-def]
    """The query's model in NumPyro: z ~ N(0, I), the MLP decoder's logits of the observed
    pixels only (as our fast path), Bernoulli on their values."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in _decoder_layers(vae)]
    observed = np.flatnonzero(mask.flatten().numpy())
    values, d = jnp.asarray(x.flatten().numpy()[observed]), vae.latent_dim

    def model() -> None:
        h = numpyro.sample("z", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
        for i, (w, b) in enumerate(layers):
            last = i == len(layers) - 1
            h = h @ (w[:, observed] if last else w) + (b[observed] if last else b)
            if not last:
                h = jax.nn.relu(h)
        numpyro.sample("x", dist.Bernoulli(logits=h).to_event(1), obs=values)

    return model


def numpyro_to_equal(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, target: float, tolerance: float, max_steps: int
) -> tuple[float, float, int, float]:
    """As ``pyro_to_equal``, with NumPyro's SVI, jit-compiled: the compilation is timed apart
    (each query's own set of observed pixels is a new shape, so a new compilation)."""
    import jax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoMultivariateNormal
    from numpyro.optim import Adam

    model = _numpyro_model(vae, x, mask)
    guide = AutoMultivariateNormal(model)
    svi = SVI(model, guide, Adam(0.05), Trace_ELBO(num_particles=16))
    state = svi.init(jax.random.PRNGKey(0))

    @jax.jit
    def block(state):  # type: ignore[no-untyped-def]
        return jax.lax.fori_loop(0, 25, lambda _, s: svi.update(s)[0], state)

    estimate = Trace_ELBO(num_particles=2000)
    start = time.perf_counter()
    compiled = block.lower(state).compile()
    compile_s = time.perf_counter() - start
    seconds, steps, c_elbo = 0.0, 0, -math.inf
    while steps < max_steps:
        start = time.perf_counter()
        state = jax.block_until_ready(compiled(state))
        seconds += time.perf_counter() - start
        steps += 25
        params = svi.get_params(state)
        c_elbo = -float(estimate.loss(jax.random.PRNGKey(steps), params, model, guide))
        if c_elbo >= target - tolerance:
            break
    return seconds, c_elbo, steps, compile_s


def numpyro_nuts(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, warmup: int, draws: int
) -> tuple[float, float]:
    """Seconds and the smallest effective sample size of NumPyro NUTS, 4 chains (vectorized)."""
    import jax
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    model = _numpyro_model(vae, x, mask)
    mcmc = MCMC(
        NUTS(model),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(1))  # the first run compiles: time a second one
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0))
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start
    z = np.asarray(mcmc.get_samples(group_by_chain=True)["z"])  # [chains, draws, d]
    return seconds, float(np.min(effective_sample_size(z)))


def our_hmc_ess(
    vae: VAE, x: torch.Tensor, mask: torch.Tensor, warmup: int, draws: int
) -> tuple[float, torch.Tensor]:
    """Seconds per query of our hmc (4 chains, all queries as one batch) and each query's ESS."""
    from numpyro.diagnostics import effective_sample_size

    post = condition(vae, x, mask, method="hmc", chains=4, warmup=warmup, draws=draws)
    bank = post.bank.reshape(draws, 4, x.shape[0], vae.latent_dim).permute(2, 1, 0, 3).numpy()
    ess = torch.tensor([float(np.min(effective_sample_size(bank[b]))) for b in range(x.shape[0])])
    return post.diagnostics.seconds / x.shape[0], ess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-mlp-z2")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--queries", type=int, default=50, help="queries in our batch")
    parser.add_argument("--peer-queries", type=int, default=10, help="of which the peers fit the first")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--peers", default="pyro,numpyro,nuts")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    print(f"{machine()}; {args.model}, {int(100 * args.fraction)}% evidence, {args.queries} queries")
    vae = load(args.model).requires_grad_(False)
    x, mask = make_queries(args.queries, args.fraction, 0, args.data_dir)
    post = condition(vae, x, mask, method="gvi", steps=500, samples=16)
    ours_ms = 1000 * post.diagnostics.seconds / args.queries
    targets = post.c_elbo(2000)
    k = args.peer_queries
    print(
        f"\nours: gvi, {ours_ms:.1f} ms / query (batch of {args.queries}); "
        f"C-ELBO median {targets.median():.2f}"
    )
    print(
        "\n| peer | query | our C-ELBO | peer C-ELBO | steps | peer ms | ratio | compile ms "
        "| ratio with compile |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios: dict[str, list[float]] = {}
    with_compile: dict[str, list[float]] = {}
    for peer, fit in (("pyro SVI mvn", pyro_to_equal), ("numpyro SVI mvn", numpyro_to_equal)):
        if peer.split()[0] not in args.peers.split(","):
            continue
        for i in range(k):
            seconds, c_elbo, steps, compile_s = fit(
                vae, x[i], mask[i], float(targets[i]), args.tolerance, args.max_steps
            )
            reached = c_elbo >= float(targets[i]) - args.tolerance
            ratio, full = 1000 * seconds / ours_ms, 1000 * (seconds + compile_s) / ours_ms
            ratios.setdefault(peer, []).append(ratio)
            with_compile.setdefault(peer, []).append(full)
            at_least = "" if reached else ">= "
            print(
                f"| {peer} | {i} | {targets[i]:.2f} | {c_elbo:.2f} | {steps} | "
                f"{1000 * seconds:.0f} | {at_least}{ratio:.2g}x | {1000 * compile_s:.0f} | "
                f"{at_least}{full:.2g}x{'' if reached else ' (not reached)'} |"
            )
            sys.stdout.flush()
    for peer, values in ratios.items():
        print(
            f"\n{peer}: time to equal C-ELBO over ours, median {statistics.median(values):.2g}x, "
            f"min {min(values):.2g}x over {len(values)} queries; with compilation, median "
            f"{statistics.median(with_compile[peer]):.2g}x"
        )
    if "nuts" in args.peers.split(","):
        ours_s, ours_ess = our_hmc_ess(vae, x, mask, args.warmup, args.draws)
        print("\n| sampler | query | seconds | min ESS | ESS / s |\n| --- | --- | --- | --- | --- |")
        per_second = []
        for i in range(k):
            seconds, ess = numpyro_nuts(vae, x[i], mask[i], args.warmup, args.draws)
            ours = float(ours_ess[i]) / ours_s
            per_second.append(ours / (ess / seconds))
            print(f"| numpyro NUTS | {i} | {seconds:.2f} | {ess:.0f} | {ess / seconds:.0f} |")
            print(f"| ours hmc | {i} | {ours_s:.3f} | {float(ours_ess[i]):.0f} | {ours:.0f} |")
            sys.stdout.flush()
        print(
            f"\nours hmc over NumPyro NUTS in ESS per second: median {statistics.median(per_second):.1f}x, "
            f"min {min(per_second):.1f}x over {k} queries"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
