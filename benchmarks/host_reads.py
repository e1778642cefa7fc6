"""Reads of device values on the host per fit, for each method, at its work option x1 and x2.

On a GPU every read (``item()``, ``bool()``, a copy to the CPU) waits for the queue to drain,
so a fit that reads once per step runs at the host's pace. This counts them without a GPU, on
the virtual device of ``tests/virtual_device.py`` (CUDA's rules, the CPU's kernels), for the
contract test's queries and budgets (five queries of a small linear-Gaussian model), which
also asserts that x2 reads no more than x1.

    python benchmarks/host_reads.py
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_contract import host_reads

from condvae import METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(sorted(METHODS)), help="comma-separated methods")
    args = parser.parse_args()
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected some of {sorted(METHODS)}")
    warnings.simplefilter("ignore")
    print("| method | work option | host reads, x1 | host reads, x2 |")
    print("| --- | --- | ---: | ---: |")
    for method in args.methods.split(","):
        work, once = host_reads(method, 1)
        twice = host_reads(method, 2)[1] if work else ""
        print(f"| {method} | {work or '(one pass)'} | {once} | {twice} |", flush=True)


if __name__ == "__main__":
    main()
