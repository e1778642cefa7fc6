"""Training on several processes (torchrun, gloo on CPU) gives the weights of one process with
the same global batch and micro-batches, and a killed multi-process run resumes to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from condvae import from_pretrained
from condvae.checkpoint import read_tensors
from condvae.errors import CondVAEError
from condvae.loop import CHECKPOINT
from condvae.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")

ARGS = ["--dataset", "mnist", "--arch", "mlp", "--latent-dim", "2", "--hidden", "16", "--batch-size", "20"]
ARGS += ["--micro-batches", "2", "--lr", "3e-3", "--seed", "5", "--valid-every", "40", "--no-progress"]
# float sums in another order (gloo averages the two ranks' gradients, one process adds them in
# turn) differ in the last bits; over 220 Adam steps that stays below this (measured: 0)
TOLERANCE = 1e-4


def launch(
    args: list[str], processes: int, words: list[str] | None = None, **popen: object
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    words = words or ["train"]  # the subcommand
    command = [sys.executable, "-m", "condvae", *words, *args]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={processes}", "-m", "condvae", *words, *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def finish(run: subprocess.Popen) -> None:
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return from_pretrained(folder / "model").state_dict()


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(synthetic_data: Path, tmp_path: Path) -> None:
    data = ["--data-dir", str(synthetic_data), "--epochs", "20", "--checkpoint-every", "1000"]
    one = launch([*ARGS, *data, "--out", str(tmp_path / "one")], 1)
    two = launch([*ARGS, *data, "--out", str(tmp_path / "two")], 2)
    finish(one)
    finish(two)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert close(a, b) < TOLERANCE
    init = weights(tmp_path / "one")
    assert all(torch.equal(init[k], a[k]) for k in a)  # read back the same way each time
    card = (tmp_path / "two" / "model" / "README.md").read_text()
    assert "processes" in card and "micro_batches" in card
    # only rank 0 wrote: one log line per validation, not two
    log = (tmp_path / "two" / "log.jsonl").read_text().splitlines()
    assert len(log) == len((tmp_path / "one" / "log.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(synthetic_data: Path, tmp_path: Path) -> None:
    data = ["--data-dir", str(synthetic_data), "--epochs", "60", "--checkpoint-every", "10"]
    finish(launch([*ARGS, *data, "--out", str(tmp_path / "whole")], 2))
    killed = launch([*ARGS, *data, "--out", str(tmp_path / "killed")], 2, start_new_session=True)
    ckpt = tmp_path / "killed" / CHECKPOINT
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if ckpt.exists() and ckpt.stat().st_size > 0:
            time.sleep(0.5)  # a few more steps
            break
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
    killed.wait(timeout=60)
    assert not (tmp_path / "killed" / "model").exists(), "the run finished before it could be killed"
    finish(launch([*ARGS, *data, "--out", str(tmp_path / "killed"), "--resume"], 2))
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    assert close(a, b) == 0.0  # the same ranks, the same order of sums: bit for bit


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["table", "partial-encoder", "pyramid"])
def test_every_trainer_runs_under_torchrun(trainer: str, synthetic_data: Path, tmp_path: Path) -> None:
    """Tabular VAEs, partial encoders and pyramids (one phase per level, each training part of
    the model) drive the same loop: two processes, the weights of one."""
    if trainer == "pyramid":
        from PIL import Image

        folder = tmp_path / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i:03d}.png")
        command, folder_name = ["pyramid", "train"], "model"
        args = ["--dataset", f"folder:{folder}", "--image-size", "16x16", "--latent-dims", "4,4"]
        args += ["--channels", "8", "--hidden", "16", "--epochs", "2", "--batch-size", "8"]
        args += ["--micro-batches", "2", "--coarse", '{"latent_dim": 4, "hidden": [16]}', "--no-progress"]
    elif trainer == "table":
        command, folder_name = ["train"], "model"
        args = ["--dataset", "wine+target", "--arch", "tabular", "--latent-dim", "2", "--hidden", "16"]
        args += ["--epochs", "6", "--batch-size", "20", "--micro-batches", "2", "--no-progress"]
    else:
        command, folder_name = ["train-partial-encoder"], "encoder"
        args = ["--vae", "mnist-mlp-z2", "--dataset", "mnist", "--data-dir", str(synthetic_data)]
        args += ["--steps", "40", "--batch-size", "20", "--micro-batches", "2", "--valid-every", "20"]
        args += ["--valid-size", "20", "--no-progress"]
    finish(launch([*args, "--out", str(tmp_path / "one")], 1, command))
    finish(launch([*args, "--out", str(tmp_path / "two")], 2, command))
    a, b = (read_tensors(tmp_path / run / folder_name / "model.safetensors")[0] for run in ("one", "two"))
    assert close(a, b) < TOLERANCE


def test_micro_batches_must_share_the_batch(synthetic_data: Path, tmp_path: Path) -> None:
    model = {"architecture": "mlp", "latent_dim": 2, "hidden": [8]}
    base = {"dataset": "mnist", "data_dir": str(synthetic_data), "model": model, "epochs": 1}
    with pytest.raises(CondVAEError, match="micro_batches: 3 does not divide batch_size 20"):
        train(TrainConfig(out=str(tmp_path / "a"), batch_size=20, micro_batches=3, **base), progress=False)  # type: ignore[arg-type]


def test_micro_batches_in_one_process_are_a_run_of_their_own(synthetic_data: Path, tmp_path: Path) -> None:
    """Two micro-batches draw other random numbers than one batch: other weights, and a resume
    with the other setting is refused."""
    model = {"architecture": "mlp", "latent_dim": 2, "hidden": [8]}
    base = {
        "dataset": "mnist",
        "data_dir": str(synthetic_data),
        "model": model,
        "epochs": 2,
        "batch_size": 20,
    }
    one = train(TrainConfig(out=str(tmp_path / "one"), **base), progress=False)  # type: ignore[arg-type]
    two = train(TrainConfig(out=str(tmp_path / "two"), micro_batches=2, **base), progress=False)  # type: ignore[arg-type]
    assert close(one.model.state_dict(), two.model.state_dict()) > 0
    with pytest.raises(Exception, match="micro_batches"):
        train(TrainConfig(out=str(tmp_path / "two"), **base), resume=True, progress=False)  # type: ignore[arg-type]
