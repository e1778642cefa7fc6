from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from condvae import from_pretrained
from condvae.checkpoint import read_tensors
from condvae.errors import CheckpointError, CondVAEError
from condvae.loop import CHECKPOINT
from condvae.train import TrainConfig, train

ARGS = [
    "--dataset",
    "mnist",
    "--arch",
    "mlp",
    "--latent-dim",
    "4",
    "--hidden",
    "64",
    "--epochs",
    "100",
    "--batch-size",
    "10",
    "--checkpoint-every",
    "25",
    "--valid-every",
    "55",
    "--kl-warmup",
    "100",
    "--seed",
    "3",
    "--no-progress",
]


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "condvae", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _step(path: Path) -> int:
    try:
        _, meta = read_tensors(path)
    except CheckpointError:
        return -1
    return json.loads(meta["loop"])["step"]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(synthetic_data: Path, tmp_path: Path) -> None:
    data = ["--data-dir", str(synthetic_data)]
    whole = _cli([*ARGS, *data, "--out", str(tmp_path / "whole")])
    assert whole.wait(timeout=300) == 0, whole.stderr.read() if whole.stderr else ""

    run = _cli([*ARGS, *data, "--out", str(tmp_path / "killed")])
    ckpt = tmp_path / "killed" / CHECKPOINT
    deadline = time.time() + 120
    while _step(ckpt) < 200 and time.time() < deadline and run.poll() is None:
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.wait()
    killed_at = _step(ckpt)
    assert run.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 0 < killed_at < 2200, f"killed at step {killed_at}"
    assert not (tmp_path / "killed" / "model").exists()

    resumed = _cli([*ARGS, *data, "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read() if resumed.stderr else ""
    a, meta_a = read_tensors(tmp_path / "whole" / CHECKPOINT)
    b, meta_b = read_tensors(ckpt)
    assert json.loads(meta_a["loop"])["step"] == json.loads(meta_b["loop"])["step"] == 2200
    for key in a:
        if key.startswith(("model.", "optim.")):
            assert torch.equal(a[key], b[key]), key
    m_a, m_b = (
        from_pretrained(tmp_path / "whole" / "model"),
        from_pretrained(tmp_path / "killed" / "model"),
    )
    for (k, va), vb in zip(m_a.state_dict().items(), m_b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    log_a = (tmp_path / "whole" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "killed" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["valid_elbo"] for r in log_a] == [
        json.loads(r)["valid_elbo"] for r in dict.fromkeys(log_b)
    ]


def _config(data: Path, out: Path, hidden: int = 8, **settings: object) -> TrainConfig:
    model = {"architecture": "mlp", "latent_dim": 2, "hidden": [hidden]}
    return TrainConfig(dataset="mnist", out=str(out), data_dir=str(data), model=model, **settings)  # type: ignore[arg-type]


def test_training_improves_and_writes_a_loadable_model(synthetic_data: Path, tmp_path: Path) -> None:
    cfg = _config(synthetic_data, tmp_path / "run", hidden=32, epochs=30, batch_size=20, lr=3e-3)
    result = train(cfg, progress=False)
    log = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 30 and log[-1]["valid_elbo"] > log[0]["valid_elbo"] + 20
    assert result.best_valid_elbo == max(r["valid_elbo"] for r in log)
    model = from_pretrained(tmp_path / "run" / "model")
    card = model.card  # type: ignore[attr-defined]
    assert card["dataset"] == "mnist" and card["training"]["steps"] == result.steps


def test_resume_rules(synthetic_data: Path, tmp_path: Path) -> None:
    cfg = _config(synthetic_data, tmp_path / "run", epochs=1, batch_size=20)
    with pytest.raises(CondVAEError, match="resume: no checkpoint"):
        train(cfg, resume=True, progress=False)
    train(cfg, progress=False)
    with pytest.raises(CondVAEError, match="already holds a training checkpoint"):
        train(cfg, progress=False)
    cfg.lr = 0.5
    with pytest.raises(CheckpointError, match=r"different settings \(\['lr'\]\)"):
        train(cfg, resume=True, progress=False)


def test_early_stopping(synthetic_data: Path, tmp_path: Path) -> None:
    # A huge learning rate makes validation stop improving; patience 2 then ends the run.
    cfg = _config(
        synthetic_data, tmp_path / "run", epochs=200, batch_size=20, lr=1e-2, lr_min=1e-2, patience=2
    )
    result = train(cfg, progress=False)
    assert result.stopped_early and result.steps < 200 * 11


def test_bad_training_settings(synthetic_data: Path, tmp_path: Path) -> None:
    base = {"dataset": "mnist", "out": str(tmp_path / "r"), "data_dir": str(synthetic_data)}
    with pytest.raises(CondVAEError, match="batch_size: 1000 is larger than the 220"):
        train(TrainConfig(**base, batch_size=1000), progress=False)
    with pytest.raises(CondVAEError, match="lr: expected a positive"):
        train(TrainConfig(**base, lr=-1.0), progress=False)
    with pytest.raises(CondVAEError, match="epochs"):
        train(TrainConfig(**base, epochs=0), progress=False)
    bad = {"lr_min": -1.0, "shift": -2, "patience": -1, "kl_warmup_steps": -5, "limit_train": 0}
    for name, value in bad.items():  # refused in one line naming the setting, before any work
        with pytest.raises(CondVAEError, match=f"^{name}: expected"):
            train(TrainConfig(**base, **{name: value}), progress=False)
    with pytest.raises(CondVAEError, match="^lr_min: expected"):
        train(TrainConfig(**base, lr_min=float("nan")), progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_linear_gaussian_learns_the_true_likelihood(tmp_path: Path) -> None:
    """Maximum likelihood by the generic trainer: held-out log p(x) reaches the true model's."""
    from condvae import LinearGaussianVAE

    truth = LinearGaussianVAE.random(data_dim=6, latent_dim=2, noise=0.4, seed=5)
    torch.manual_seed(0)
    with torch.no_grad():
        x = truth.decode(torch.randn(6000, 2)).sample()
    train_x, test_x = x[:5000], x[5000:]
    cfg = TrainConfig(
        dataset="ppca",
        out=str(tmp_path / "run"),
        model={"architecture": "linear_gaussian", "latent_dim": 2},
        epochs=40,
        batch_size=100,
        lr=2e-2,
        lr_min=1e-3,
    )
    result = train(cfg, progress=False, data=(train_x, test_x))
    with torch.no_grad():
        learned = result.model.log_evidence(test_x).mean()  # type: ignore[attr-defined]
        exact = truth.log_evidence(test_x).mean()
    assert abs(float(learned - exact)) < 0.05  # nats per item, for 6 dimensions


def test_tensor_data_is_checked(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="custom", out=str(tmp_path / "r"), model={"architecture": "linear_gaussian"})
    with pytest.raises(CondVAEError, match=r"data\[0\]: contains NaN"):
        train(cfg, progress=False, data=(torch.full((200, 4), float("nan")), None))
    with pytest.raises(CondVAEError, match=r"data\[1\]: validation items have shape \[3\]"):
        train(cfg, progress=False, data=(torch.zeros(200, 4), torch.zeros(10, 3)))
