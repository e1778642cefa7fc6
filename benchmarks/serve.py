"""Load on ``condvae serve``: N concurrent clients on loopback for a bounded time.

    python benchmarks/serve.py --scenarios ipa:32:30,gvi:4:30

The server runs as its own process (``python -m condvae serve``, as a user starts it), the
clients as asyncio tasks in this one, each sending its next request as soon as the last is
answered (closed loop). A request is one ``POST /api/condition`` of a test digit (the bundled
examples, drawn at random per request) with a random mask observing ``--fraction`` of the
pixels, asking for ``--n`` completions, answered with PNGs, per-pixel statistics and the
C-ELBO. Reported per scenario: requests per second, latency percentiles, and errors (any
answer but 200, or a failed connection). The first ``--warmup`` seconds of each scenario are
not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import machine

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, port: int, workers: int, fast_workers: int, queue: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "condvae", "serve", "--port", str(port), "--models", model]
    command += ["--workers", str(workers), "--fast-workers", str(fast_workers), "--queue", str(queue)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read() if server.stderr else ''}")
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer /api/health within 120 s")


def masks(shape: list[int], fraction: float, count: int, seed: int) -> list[list[list[int]]]:
    rng = random.Random(seed)
    _, h, w = shape
    return [[[int(rng.random() < fraction) for _ in range(w)] for _ in range(h)] for _ in range(count)]


async def client(
    url: str, bodies: list[dict], until: float, counted_from: float, seed: int, out: dict[str, list]
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.perf_counter() < until:
            body = rng.choice(bodies)
            start = time.perf_counter()
            try:
                r = await http.post("/api/condition", json=body)
                ok = r.status_code == 200
                reason = "" if ok else f"{r.status_code}: {r.json().get('detail', '')[:80]}"
            except httpx.HTTPError as err:
                ok, reason = False, f"{type(err).__name__}"
            end = time.perf_counter()
            if start < counted_from:
                continue
            (out["latency"] if ok else out["errors"]).append(end - start if ok else reason)


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) of a process so far: this one, or ``pid`` from /proc."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scenario(
    url: str, bodies: list[dict], clients: int, seconds: float, warmup: float, server_pid: int | None
) -> dict:
    out: dict[str, list] = {"latency": [], "errors": []}
    start = time.perf_counter()
    counted_from, until = start + warmup, start + warmup + seconds
    tasks = [asyncio.create_task(client(url, bodies, until, counted_from, i, out)) for i in range(clients)]
    await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
    cpu = {"server": cpu_seconds(server_pid) if server_pid else 0.0, "clients": cpu_seconds(None)}
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - counted_from
    served = max(1, len(out["latency"]))
    cpu = {
        k: (cpu_seconds(server_pid if k == "server" else None) - v) / served * 1000 for k, v in cpu.items()
    }
    lat = sorted(out["latency"])
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [float("nan")] * 99
    return {
        "requests": len(lat) + len(out["errors"]),
        "rps": len(lat) / elapsed,
        "p50": q[49] * 1000,
        "p95": q[94] * 1000,
        "p99": q[98] * 1000,
        "errors": len(out["errors"]),
        "reasons": sorted(set(out["errors"]))[:3],
        "cpu_server": cpu["server"] if server_pid else float("nan"),
        "cpu_clients": cpu["clients"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mnist-mlp-z2")
    parser.add_argument("--scenarios", default="ipa:32:30,gvi:4:30", help="method:clients:seconds, ...")
    parser.add_argument("--fraction", type=float, default=0.3, help="share of pixels each request observes")
    parser.add_argument("--n", type=int, default=8, help="completions per request")
    parser.add_argument("--workers", type=int, default=1, help="the server's workers for iterative fits")
    parser.add_argument(
        "--fast-workers", type=int, default=1, help="the server's workers for one-pass methods"
    )
    parser.add_argument("--queue", type=int, default=64, help="the server's job slots")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not counted at the start")
    parser.add_argument("--url", default=None, help="a running server instead of starting one")
    args = parser.parse_args()

    port = free_port()
    server = None if args.url else start_server(args.model, port, args.workers, args.fast_workers, args.queue)
    url = args.url or f"http://127.0.0.1:{port}"
    try:
        info = httpx.get(f"{url}/api/models/{args.model}").json()
        examples = httpx.get(f"{url}/api/models/{args.model}/examples").json()["x"]
        bodies_for = lambda method: [  # noqa: E731
            {"model": args.model, "x": x, "mask": m, "method": method, "n": args.n, "seed": 0}
            for x, m in zip(examples, masks(info["data_shape"], args.fraction, len(examples), 0), strict=True)
        ]
        print(
            f"# condvae serve under load: {args.model}, {args.n} completions per request, "
            f"{args.fraction:.0%} of pixels observed; server workers {args.workers} (fits) + "
            f"{args.fast_workers} (one-pass), queue {args.queue}"
        )
        print(f"# {machine()}; server and clients on one machine (loopback)")
        print(
            "| method | clients | seconds | requests | req/s | p50 ms | p95 ms | p99 ms | errors "
            "| server CPU ms/req | clients CPU ms/req |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for spec in args.scenarios.split(","):
            method, clients, seconds = spec.split(":")
            pid = server.pid if server is not None else None
            r = asyncio.run(scenario(url, bodies_for(method), int(clients), float(seconds), args.warmup, pid))
            print(
                f"| {method} | {clients} | {float(seconds):g} | {r['requests']} | {r['rps']:.1f} | "
                f"{r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['errors']} | "
                f"{r['cpu_server']:.1f} | {r['cpu_clients']:.1f} |",
                flush=True,
            )
            for reason in r["reasons"]:
                print(f"#   error: {reason}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
