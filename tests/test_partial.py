"""Partial encoders (IPA / IPA-R): exactness against the linear-Gaussian oracle, training,
resume, saving and refusal, and the ``ipa`` / ``semi`` conditioning methods."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import condvae
from condvae.conditioning import condition
from condvae.errors import CondVAEError
from condvae.masks import sample_masks
from condvae.models import MLPVAE, ConvVAE, HierarchicalVAE, LinearGaussianVAE
from condvae.partial import (
    PartialTrainConfig,
    build_partial_encoder,
    load_partial_encoder,
    save_partial_encoder,
    train_partial_encoder,
)
from condvae.partial import train as partial_train


@pytest.fixture(scope="module")
def linear_gaussian() -> tuple[LinearGaussianVAE, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    vae = LinearGaussianVAE.random(8, 2, noise=0.5, seed=1)
    with torch.no_grad():
        return vae, vae.decode(torch.randn(20000, 2)).sample(), vae.decode(torch.randn(500, 2)).sample()


@pytest.fixture(scope="module")
def o_for_encoder(linear_gaussian, tmp_path_factory):
    vae, train_x, valid_x = linear_gaussian
    out = tmp_path_factory.mktemp("lg") / "run"
    cfg = PartialTrainConfig(
        vae="linear-gaussian",
        out=str(out),
        covariance="full",
        hidden=[128, 128],
        steps=2500,
        batch_size=256,
        lr=3e-3,
        valid_every=500,
    )
    return train_partial_encoder(cfg, vae=vae, data=(train_x, valid_x), progress=False)


@pytest.mark.slow
def test_o_for_recovers_the_closed_form_posterior_for_unseen_masks(linear_gaussian, o_for_encoder) -> None:
    """The O_for optimum over full-covariance Gaussians is p(z | x_o) itself (E_{x_u|x_o} p(z|x)
    = p(z | x_o)); on fresh data and masks drawn with another seed the trained encoder must be
    within KL 0.05 nats on average (0.1 at the 90th percentile) and its mean within 0.35
    posterior standard deviations on average. The prior, for scale, is ~3 nats away."""
    vae, _, _ = linear_gaussian
    gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        x = vae.decode(torch.randn(400, 2, generator=gen)).mean
        x = x + vae.noise_scale() * torch.randn(x.shape, generator=gen)
        mask = sample_masks("random", 400, (8,), gen)
        keep = mask.any(1)
        x, mask = x[keep], mask[keep]
        exact = vae.posterior(x, mask)
        r = o_for_encoder.encoder(x, mask)
        kl = torch.distributions.kl_divergence(exact, r)
        d = r.mean - exact.mean
        sds = torch.einsum("bi,bij,bi->b", d, exact.precision_matrix, d).sqrt()
        prior_kl = torch.distributions.kl_divergence(
            exact, torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        )
    assert float(kl.mean()) < 0.05, float(kl.mean())
    assert float(kl.quantile(0.9)) < 0.1
    assert float(sds.mean()) < 0.35
    assert float(prior_kl.mean()) > 1.0  # the test could tell a wrong answer


def test_ipa_method_gives_the_encoder_output_and_matches_log_evidence(linear_gaussian, o_for_encoder) -> None:
    vae, _, valid_x = linear_gaussian
    x = valid_x[:16]
    mask = sample_masks("random:0.5", 16, (8,), torch.Generator().manual_seed(3))
    mask[:, 0] = True
    mask[:, 1] = False
    post = condition(vae, x, mask, method="ipa", encoder=o_for_encoder.encoder)
    z = post.sample(4000)
    exact = vae.posterior(x, mask)
    assert (z.mean(0) - exact.mean).abs().max() < 0.5
    assert post.diagnostics["decoder_evaluations_per_query"] == 0
    with torch.no_grad():
        gap = vae.log_evidence(x, mask) - post.c_elbo(4000)
    assert (gap > -0.05).all() and float(gap.mean()) < 0.1  # C-ELBO is a bound, and a tight one
    torch.testing.assert_close(post.log_prob(z[:3]), o_for_encoder.encoder(x, mask).log_prob(z[:3]))


def test_semi_amortized_starts_at_the_encoder_and_improves(linear_gaussian, o_for_encoder) -> None:
    vae, _, valid_x = linear_gaussian
    x = valid_x[:32]
    mask = sample_masks("random:0.4", 32, (8,), torch.Generator().manual_seed(4))
    mask[:, 0], mask[:, 1] = True, False
    # a deliberately poor start: a partial encoder after 20 steps
    weak = train_partial_encoder(
        PartialTrainConfig(
            vae="lg",
            out=str(Path(o_for_encoder.out).parent / "weak"),
            covariance="full",
            hidden=[32],
            steps=20,
            batch_size=64,
            valid_every=20,
        ),
        vae=vae,
        data=(valid_x, valid_x),
        progress=False,
    ).encoder
    post = condition(vae, x, mask, method="semi", encoder=weak, steps=300, lr=0.05)
    trace = post.diagnostics["c_elbo_trace"]
    assert trace.shape == (300, 32)
    r = weak(x, mask)
    frozen_start = condition(vae, x, mask, method="semi", encoder=weak, steps=1, lr=1e-12).distribution()
    torch.testing.assert_close(frozen_start.mean, r.mean, atol=1e-4, rtol=0)  # step 0 is the amortized answer
    torch.testing.assert_close(frozen_start.covariance_matrix, r.covariance_matrix, atol=1e-4, rtol=1e-4)
    start = condition(vae, x, mask, method="ipa", encoder=weak).c_elbo(4000)
    final = post.c_elbo(4000)
    with torch.no_grad():
        exact = vae.log_evidence(x, mask)
    assert float((final - start).mean()) > 1.0
    assert float((exact - final).mean()) < 0.1
    # from the trained encoder, the default few dozen steps never lose ground
    good = condition(vae, x, mask, method="ipa", encoder=o_for_encoder.encoder).c_elbo(4000)
    refined = condition(vae, x, mask, method="semi", encoder=o_for_encoder.encoder).c_elbo(4000)
    assert float((refined - good).mean()) > -0.02 and float((exact - refined).mean()) < 0.05


def test_partial_encoder_starts_as_the_vae_encoder() -> None:
    """With every pixel observed, the copied network is q(z | x) before training (paper 000's
    IPA-R initialisation); the mask's input weights start at zero."""
    for vae in (MLPVAE((1, 8, 8), 3, hidden=[16]), ConvVAE((1, 8, 8), 3, channels=[4, 8], hidden=16)):
        enc = build_partial_encoder(vae)
        x = torch.rand(5, 1, 8, 8).round()
        full = torch.ones_like(x, dtype=torch.bool)
        # the mask channel adds a constant only through zero weights
        torch.testing.assert_close(enc(x, full).mean, vae.encode(x).mean)
        torch.testing.assert_close(enc(x, full).stddev, vae.encode(x).stddev)


def test_hierarchical_partial_encoder_runs_per_group() -> None:
    vae = HierarchicalVAE((1, 8, 8), groups=[2, 3, 4], hidden=[32, 16], state=16)
    enc = build_partial_encoder(vae)
    x = torch.rand(6, 1, 8, 8).round()
    mask = sample_masks("mixture", 6, (1, 8, 8), torch.Generator().manual_seed(0))
    r = enc(x, mask, vae)
    z = r.rsample((3,))
    assert z.shape == (3, 6, 9) and r.log_prob(z).shape == (3, 6)
    kl = enc.forward_kl(vae, x, mask)
    assert kl.shape == (6,) and (kl >= 0).all()
    full = torch.ones_like(mask)
    torch.manual_seed(0)
    assert float(enc.forward_kl(vae, x, full).detach().abs().max()) < 1e-5  # starts equal to q(z | x)
    loss = enc.reverse_loss(vae, x, mask, samples=2)
    loss.mean().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    with pytest.raises(CondVAEError, match="diagonal per group"):
        build_partial_encoder(vae, covariance="full")
    keep = mask.flatten(1).any(1) & ~mask.flatten(1).all(1)
    ipa = condition(vae, x[keep], mask[keep], method="ipa", encoder=enc)
    assert ipa.sample(4).shape == (4, int(keep.sum()), 9) and torch.isfinite(ipa.c_elbo(8)).all()
    # semi starts from the moments of the chain (not Gaussian overall) and refines them
    semi = condition(vae, x[keep], mask[keep], method="semi", encoder=enc, steps=5)
    assert semi.diagnostics["c_elbo_trace"].shape == (5, int(keep.sum()))


def test_per_query_methods_run_on_grouped_latents() -> None:
    torch.manual_seed(0)
    vae = HierarchicalVAE((1, 8, 8), groups=[2, 3, 4], hidden=[32, 16], state=16)
    x = torch.rand(3, 1, 8, 8).round()
    mask = sample_masks("random:0.5", 3, (1, 8, 8), torch.Generator().manual_seed(0))
    for method, options in (
        ("gvi", {"steps": 30}),
        ("planar", {"steps": 30}),
        ("hmc", {"draws": 20, "warmup": 20}),
        ("importance", {"particles": 200}),
    ):
        post = condition(vae, x, mask, method=method, **options)
        assert post.sample(5).shape == (5, 3, 9), method
        assert torch.isfinite(post.query_log_likelihood(x, 50)).all()


def _tiny_mnist_vae(path: Path) -> MLPVAE:
    torch.manual_seed(0)
    vae = MLPVAE((1, 28, 28), 2, hidden=[32])
    vae.card = {"name": "tiny-mnist", "dataset": "mnist"}
    condvae.save_pretrained(vae, path, card=vae.card)
    return condvae.load(str(path))


def test_training_resumes_to_identical_weights(synthetic_data: Path, tmp_path: Path, monkeypatch) -> None:
    vae_dir = tmp_path / "vae"
    _tiny_mnist_vae(vae_dir)
    common = dict(
        vae=str(vae_dir),
        data_dir=str(synthetic_data),
        steps=40,
        batch_size=16,
        checkpoint_every=10,
        valid_every=20,
        valid_size=20,
        objective="reverse",
        samples=2,
    )
    whole = train_partial_encoder(PartialTrainConfig(out=str(tmp_path / "whole"), **common), progress=False)

    calls = {"n": 0}
    real = partial_train.sample_masks

    def dies_at_step_25(*args, **kwargs):
        if args[1] == 16:  # a training batch (validation draws 20)
            calls["n"] += 1
            if calls["n"] == 26:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(partial_train, "sample_masks", dies_at_step_25)
    cfg = PartialTrainConfig(out=str(tmp_path / "killed"), **common)
    with pytest.raises(KeyboardInterrupt):
        train_partial_encoder(cfg, progress=False)
    monkeypatch.setattr(partial_train, "sample_masks", real)
    assert not (tmp_path / "killed" / "encoder").exists()
    with pytest.raises(CondVAEError, match="already holds a training checkpoint"):
        train_partial_encoder(cfg, progress=False)
    resumed = train_partial_encoder(cfg, resume=True, progress=False)
    for (k, a), b in zip(
        whole.encoder.state_dict().items(), resumed.encoder.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    other = PartialTrainConfig(out=str(tmp_path / "killed"), **{**common, "lr": 5e-4})
    with pytest.raises(Exception, match="different settings"):
        train_partial_encoder(other, resume=True, progress=False)


def test_saved_encoder_loads_and_is_refused_for_another_vae(tmp_path: Path) -> None:
    vae = MLPVAE((1, 8, 8), 3, hidden=[16])
    vae.card = {"name": "vae-A"}
    enc = build_partial_encoder(vae, covariance="full")
    enc.card = {"name": "enc-A", "objective": "forward"}
    save_partial_encoder(enc, tmp_path / "enc")
    back = load_partial_encoder(tmp_path / "enc", vae)
    for a, b in zip(enc.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = MLPVAE((1, 8, 8), 3, hidden=[16])
    other.card = {"name": "vae-B"}
    with pytest.raises(
        CondVAEError, match=r"'enc-A' \(.*enc\) was trained for the VAE 'vae-A'.*not for 'vae-B'"
    ):
        load_partial_encoder(tmp_path / "enc", other)
    x, mask = torch.rand(2, 1, 8, 8).round(), torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    with pytest.raises(CondVAEError, match=r"'enc-A'.*vae-A.*not for 'vae-B'"):
        condition(other, x, mask, method="ipa", encoder=enc)
    with pytest.raises(CondVAEError, match="unknown partial encoder"):
        condition(vae, x, mask, method="ipa", encoder=str(tmp_path / "nope"))
    with pytest.raises(CondVAEError, match="no bundled partial encoder"):
        condition(vae, x, mask, method="ipa")
    (tmp_path / "enc" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CondVAEError, match="corrupt"):
        load_partial_encoder(tmp_path / "enc", vae)


def test_bad_training_settings(tmp_path: Path) -> None:
    vae = MLPVAE((1, 8, 8), 3, hidden=[16])
    data = (torch.rand(64, 1, 8, 8), torch.rand(8, 1, 8, 8))
    for change, match in (
        ({"objective": "sideways"}, "objective"),
        ({"steps": 0}, "steps"),
        ({"covariance": "banded"}, "covariance"),
        ({"batch_size": 1000}, "batch_size"),
    ):
        cfg = PartialTrainConfig(vae="v", out=str(tmp_path / "o"), **change)  # type: ignore[arg-type]
        with pytest.raises(CondVAEError, match=match):
            train_partial_encoder(cfg, vae=vae, data=data, progress=False)


def test_wrapped_user_vaes_train_with_the_objective_they_support(tmp_path: Path) -> None:
    """A decoder-only model trains IPA-R (O_for needs an encoder and says so); a user encoder
    with a non-Gaussian q gets the Monte Carlo O_for, -E_q log r."""
    from torch import nn
    from torch.distributions import Independent, Laplace

    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 36), nn.Unflatten(1, (1, 6, 6)))
    vae = condvae.wrap(decoder, latent_dim=3, data_shape=(1, 6, 6), likelihood="bernoulli")
    x = torch.rand(128, 1, 6, 6).round()
    settings = dict(vae="mine", steps=10, batch_size=32, valid_every=10, valid_size=32)
    with pytest.raises(CondVAEError, match="has none; use objective='reverse'"):
        cfg = PartialTrainConfig(out=str(tmp_path / "f"), **settings)  # type: ignore[arg-type]
        train_partial_encoder(cfg, vae=vae, data=(x, x), progress=False)
    cfg = PartialTrainConfig(out=str(tmp_path / "r"), objective="reverse", **settings)  # type: ignore[arg-type]
    assert train_partial_encoder(cfg, vae=vae, data=(x, x), progress=False).steps == 10
    back = load_partial_encoder(tmp_path / "r" / "encoder", vae)
    mask = torch.zeros_like(x[:4], dtype=torch.bool)
    mask[..., :3, :] = True
    assert condition(vae, x[:4], mask, method="ipa", encoder=back).sample(2).shape == (2, 4, 3)

    class LaplaceEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 6))

        def forward(self, x: torch.Tensor) -> Independent:
            loc, pre = self.net(x).chunk(2, -1)
            return Independent(Laplace(loc, nn.functional.softplus(pre) + 0.1), 1)

    laplace = condvae.wrap(decoder, 3, (1, 6, 6), "bernoulli", encoder=LaplaceEncoder())
    some = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.5
    loss = build_partial_encoder(laplace).forward_kl(laplace, x[:8], some)
    assert loss.shape == (8,) and torch.isfinite(loss).all()
