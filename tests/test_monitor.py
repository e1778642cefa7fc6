"""Progress and cancel of running fits (condvae.conditioning.monitor)."""

from __future__ import annotations

import pytest
import torch

from condvae import condition
from condvae.conditioning.monitor import Cancelled, tick, watching
from condvae.models import LinearGaussianVAE


@pytest.fixture
def query() -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    vae = LinearGaussianVAE((6,), latent_dim=2)
    x = torch.randn(2, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]] * 2, dtype=torch.bool)
    return vae, x, mask


def test_tick_outside_a_watch_does_nothing() -> None:
    tick(1, 10, "anything")


@pytest.mark.parametrize(
    ("method", "options", "total"),
    [
        ("gvi", {"steps": 30}, 30),
        ("hmc", {"warmup": 10, "draws": 10, "chains": 2}, 20),
        ("ais", {"temperatures": 25, "particles": 8}, 25),
    ],
)
def test_fits_report_every_step(query, method: str, options: dict, total: int) -> None:
    vae, x, mask = query
    seen: list[tuple[str, int, int]] = []
    with watching(lambda phase, done, of: seen.append((phase, done, of))):
        condition(vae, x, mask, method=method, **options)
    dones = [d for _, d, of in seen if of == total]
    assert dones == list(range(1, total + 1))


def test_cancel_stops_a_fit_within_a_step(query) -> None:
    vae, x, mask = query
    seen: list[int] = []

    def report(phase: str, done: int, total: int) -> None:
        seen.append(done)
        if done == 5:
            event.set()

    with (
        pytest.raises(Cancelled, match="stopped by test"),
        watching(report, reason=lambda: "stopped by test") as event,
    ):
        condition(vae, x, mask, method="gvi", steps=10_000)
    assert seen == [1, 2, 3, 4, 5]
