"""Sharded, resumable conditioning of a dataset (``condvae condition-dataset``): the same
results in the same order as one batch, on one process or two (torchrun, gloo), and a run with a
killed rank completed by a rerun that recomputes no finished shard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from condvae import condition, load
from condvae.errors import CondVAEError
from condvae.sharded import SHARDS, Settings, _dataset, condition_dataset, query_masks, read_results

QUERIES = 20


def settings(**changes: object) -> Settings:
    base = {"model": "mnist-mlp-z2", "dataset": "mnist:test", "mask": "random:0.3", "method": "gvi"}
    base |= {
        "options": {"steps": 60},
        "seed": 4,
        "completions": 2,
        "samples": 8,
        "chunk": 3,
        "limit": QUERIES,
    }
    return Settings(**(base | changes))  # type: ignore[arg-type]


def reference(s: Settings, data_dir: Path) -> dict[str, torch.Tensor]:
    """All queries in one batch, no shards."""
    vae = load(s.model)
    x = _dataset(vae, s.dataset, str(data_dir), s.limit)
    mask = query_masks(s.mask, len(x), tuple(vae.data_shape), s.seed)
    post = condition(vae, x, mask, method=s.method, seed=s.seed, **s.options)
    return {
        "z": post.sample(s.samples).transpose(0, 1),
        "completions": post.complete(s.completions, mean=True).transpose(0, 1),
        "mask": mask,
    }


def agree(results: dict, ref: dict) -> None:
    assert torch.equal(results["index"], torch.arange(QUERIES))
    assert torch.equal(results["mask"], ref["mask"])
    torch.testing.assert_close(results["z"], ref["z"], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(results["completions"].float(), ref["completions"], atol=2e-3, rtol=0)
    assert results["c_elbo"].shape == (QUERIES,) and torch.isfinite(results["c_elbo"]).all()


def cli(s: Settings, out: Path, data: Path, processes: int = 1, **popen: object) -> subprocess.Popen:
    args = ["--model", s.model, "--dataset", s.dataset, "--mask", s.mask, "--method", s.method]
    args += [f"--option={k}={v}" for k, v in s.options.items()]
    args += ["--seed", str(s.seed), "--completions", str(s.completions), "--samples", str(s.samples)]
    args += ["--chunk", str(s.chunk), "--limit", str(s.limit), "--out", str(out), "--data-dir", str(data)]
    args += ["--no-progress"]
    command = [sys.executable, "-m", "condvae", "condition-dataset", *args]
    if processes > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
        ]
        command += ["-m", "condvae", "condition-dataset", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def finish(run: subprocess.Popen) -> str:
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    return out


def test_shards_give_the_results_of_one_batch(synthetic_data: Path, tmp_path: Path) -> None:
    s = settings()
    out = condition_dataset(s, tmp_path / "one", data_dir=str(synthetic_data), progress=False)
    assert len(list((out / SHARDS).glob("*.safetensors"))) == 7  # 20 queries, 3 a shard
    results = read_results(out)
    agree(results, reference(s, synthetic_data))
    assert results["settings"]["method"] == "gvi"
    assert "diagnostics.final_c_elbo" in results


def test_rules_of_an_output_folder(synthetic_data: Path, tmp_path: Path) -> None:
    s = settings(method="ipa", options={})
    condition_dataset(s, tmp_path / "o", data_dir=str(synthetic_data), progress=False)
    with pytest.raises(CondVAEError, match=r"holds results of other settings \(\['seed'\]\)"):
        condition_dataset(
            settings(method="ipa", options={}, seed=5), tmp_path / "o", data_dir=str(synthetic_data)
        )
    with pytest.raises(CondVAEError, match="no readable manifest.json"):
        read_results(tmp_path)
    with pytest.raises(CondVAEError, match="dataset: expected name:split"):
        condition_dataset(settings(dataset="mnist"), tmp_path / "p", data_dir=str(synthetic_data))
    with pytest.raises(CondVAEError, match="options"):
        condition_dataset(settings(options={"stpes": 3}), tmp_path / "q", data_dir=str(synthetic_data))
    with pytest.raises(CondVAEError, match="samples: "):
        condition_dataset(settings(samples=10**12), tmp_path / "s", data_dir=str(synthetic_data))
    with pytest.raises(CondVAEError, match="completions: "):
        condition_dataset(settings(completions=10**9), tmp_path / "t", data_dir=str(synthetic_data))
    with pytest.raises(CondVAEError, match="precision: expected float32 or bfloat16"):
        condition_dataset(settings(precision="half"), tmp_path / "r", data_dir=str(synthetic_data))


def test_bfloat16_decoders_give_nearly_the_same_results(synthetic_data: Path, tmp_path: Path) -> None:
    s = settings(method="ipa", options={}, completions=2)
    exact = read_results(condition_dataset(s, tmp_path / "f32", data_dir=str(synthetic_data), progress=False))
    s16 = settings(method="ipa", options={}, completions=2, precision="bfloat16")
    mixed = read_results(
        condition_dataset(s16, tmp_path / "bf16", data_dir=str(synthetic_data), progress=False)
    )
    assert torch.equal(exact["z"], mixed["z"])  # the encoder is not touched
    assert float((exact["completions"].float() - mixed["completions"].float()).abs().max()) < 0.03
    assert float((exact["c_elbo"] - mixed["c_elbo"]).abs().max()) < 0.5


@pytest.mark.slow
def test_two_ranks_and_a_killed_rank(synthetic_data: Path, tmp_path: Path) -> None:
    s = settings()
    ref = reference(s, synthetic_data)
    finish(cli(s, tmp_path / "two", synthetic_data, processes=2))
    agree(read_results(tmp_path / "two"), ref)

    slow = settings(options={"steps": 1500}, chunk=2)  # 10 shards of about half a second each
    ref = reference(slow, synthetic_data)
    run = cli(slow, tmp_path / "killed", synthetic_data, processes=2, start_new_session=True)
    shards = tmp_path / "killed" / SHARDS
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("*.safetensors"))) < 3:
        time.sleep(0.05)
    ranks = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
    assert ranks, "no rank processes found under torchrun"
    os.kill(int(ranks[-1]), signal.SIGKILL)  # one rank dies mid-run; torchrun stops the other
    run.wait(timeout=120)
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards.glob("*.safetensors")}
    assert 3 <= len(before) < 10, f"{len(before)} shards written before the kill"
    with pytest.raises(CondVAEError, match="incomplete"):
        read_results(tmp_path / "killed")
    finish(cli(slow, tmp_path / "killed", synthetic_data, processes=1))
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards.glob("*.safetensors")}
    assert len(after) == 10 and all(after[name] == stamp for name, stamp in before.items())  # none redone
    results = read_results(tmp_path / "killed")
    assert torch.equal(results["index"], torch.arange(QUERIES))
    torch.testing.assert_close(results["z"], ref["z"], atol=2e-4, rtol=1e-4)
