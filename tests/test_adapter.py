"""A user's own decoder through condvae.wrap: same answers as the built-in protocol, each wrap
mistake refused at wrap time, saving by reference to the user's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pytorch_examples_vae import VAE
from torch import nn
from torch.distributions import Independent, Normal

import condvae
from condvae import LinearGaussianVAE, store
from condvae.errors import CondVAEError
from condvae.store import fingerprint


class LinearDecoder(nn.Module):
    """The oracle's decoder as a plain module returning a torch distribution."""

    def __init__(self, oracle: LinearGaussianVAE) -> None:
        super().__init__()
        self.oracle = oracle

    def forward(self, z: torch.Tensor) -> Normal:
        return Normal(z @ self.oracle.weight.T + self.oracle.bias, self.oracle.noise_scale())


def test_wrapped_distribution_decoder_matches_the_oracle() -> None:
    oracle = LinearGaussianVAE.random(data_dim=6, latent_dim=2, seed=4).requires_grad_(False)
    vae = condvae.wrap(LinearDecoder(oracle), latent_dim=2, data_shape=(6,), likelihood="gaussian")
    x = torch.randn(5, 6)
    mask = torch.rand(5, 6) < 0.5
    mask[:, 0], mask[:, 1] = True, False
    z = torch.randn(3, 5, 2)
    torch.testing.assert_close(vae.log_likelihood(x, z, mask), oracle.log_likelihood(x, z, mask))
    grid = condvae.condition(vae, x, mask, method="grid")
    torch.testing.assert_close(grid.log_evidence(), oracle.log_evidence(x, mask), atol=2e-3, rtol=0)


def test_wrapped_tensor_decoder_and_encoder() -> None:
    decoder = nn.Sequential(nn.Linear(3, 20))  # flat logits for 1x4x5 images are reshaped
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(20, 6))

    class Encoder(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            loc, raw = encoder(x).chunk(2, -1)
            return loc, nn.functional.softplus(raw)

    vae = condvae.wrap(decoder, latent_dim=3, data_shape=(1, 4, 5), encoder=Encoder())
    x = torch.bernoulli(torch.full((2, 1, 4, 5), 0.5))
    assert vae.decode(torch.randn(7, 2, 3)).batch_shape == (7, 2, 1, 4, 5)
    assert vae.encode(x).event_shape == (3,)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :2, :] = True
    post = condvae.condition(vae, x, mask, method="importance", particles=100)
    assert post.sample(4).shape == (4, 2, 3)


def test_wrapped_errors() -> None:
    with pytest.raises(CondVAEError, match=r"decoder: returned shape \[4, 7\], expected \[N, 1, 2, 3\]"):
        condvae.wrap(nn.Linear(2, 7), latent_dim=2, data_shape=(1, 2, 3))  # refused at wrap time
    unchecked = condvae.wrap(nn.Linear(2, 7), latent_dim=2, data_shape=(1, 2, 3), check=False)
    with pytest.raises(CondVAEError, match=r"decoder: returned shape \[4, 7\], expected \[N, 1, 2, 3\]"):
        unchecked.decode(torch.randn(4, 2))
    good = condvae.wrap(nn.Linear(2, 6), latent_dim=2, data_shape=(6,))
    x, mask = torch.zeros(1, 6), torch.tensor([[True, False] * 3])
    with pytest.raises(CondVAEError, match="encoder: this wrapped model has none"):
        condvae.condition(good, x, mask, method="importance")
    assert condvae.condition(good, x, mask, method="importance", proposal="prior").sample(2).shape == (
        2,
        1,
        2,
    )
    with pytest.raises(CondVAEError, match="decoder: expected an nn.Module or a callable"):
        condvae.wrap(3, latent_dim=2, data_shape=(2,))  # type: ignore[arg-type]
    with pytest.raises(CondVAEError, match="source: a wrapped model is saved by reference"):
        condvae.save_pretrained(good, "/tmp/never-written")


def test_distribution_with_wrong_shape() -> None:
    decoder = nn.Sequential(nn.Linear(2, 5))

    class Dist(nn.Module):
        def forward(self, z: torch.Tensor) -> Independent:
            return Independent(Normal(decoder(z), 1.0), 1)

    with pytest.raises(CondVAEError, match=r"decoder: returned a distribution with batch shape \[4\]"):
        condvae.wrap(Dist(), latent_dim=2, data_shape=(5,), likelihood="gaussian")


# -- the PyTorch-examples VAE (tests/pytorch_examples_vae.py): wrapping that checks itself -----------

SOURCE = "pytorch_examples_vae:VAE"
TINY = {"hidden": 32, "latent": 4}


def _examples(seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(**TINY)


def _wrap_examples(model: VAE, **options: object) -> condvae.VAE:
    settings = {
        "decoder_output": "probs",
        "encoder": model.encode,
        "encoder_input": "flat",
        "encoder_output": "mu_logvar",
        **options,
    }
    return condvae.wrap(model.decode, 4, (1, 28, 28), **settings)  # type: ignore[arg-type]


def _binary(n: int, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(seed))


def test_help_states_the_contract() -> None:
    doc = condvae.wrap.__doc__ or ""
    for term in ("Contract:", "decoder_output", "mu_logvar", "encoder_input", "source", "never pickled"):
        assert term in doc, term
    assert callable(condvae.wrap) and not isinstance(condvae.wrap, type)


def test_probabilities_as_logits_are_refused() -> None:
    model = _examples()
    with pytest.raises(
        CondVAEError, match=r"decoder: its outputs all lie in \[0, 1\].*decoder_output='probs'"
    ):
        condvae.wrap(model.decode, 4, (1, 28, 28))
    logits = nn.Linear(4, 784)
    with pytest.raises(CondVAEError, match=r"decoder: decoder_output='probs' but it returned values outside"):
        condvae.wrap(logits, 4, (1, 28, 28), decoder_output="probs")
    with pytest.raises(CondVAEError, match=r"decoder_output: 'probs' does not fit a gaussian likelihood"):
        condvae.wrap(logits, 4, (1, 28, 28), likelihood="gaussian", decoder_output="probs")


def test_log_variance_as_scale_is_refused_and_flat_input_suggested() -> None:
    model = _examples()
    with pytest.raises(CondVAEError, match=r"encoder: its second output has values <= 0 .*'mu_logvar'"):
        _wrap_examples(model, encoder_output="loc_scale")
    with pytest.raises(CondVAEError, match=r"encoder: calling it on \[4, 1, 28, 28\].*encoder_input='flat'"):
        _wrap_examples(model, encoder_input="shaped")

    def large(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # log-variances shifted up
        mu, logvar = model.encode(x)
        return mu, logvar.abs() + 10

    with pytest.warns(UserWarning, match=r"encoder: its scales are large .*'mu_logvar'"):
        _wrap_examples(model, encoder=large, encoder_output="loc_scale")
    with pytest.warns(UserWarning, match=r"encoder: every logvar is positive .*'loc_scale'"):
        _wrap_examples(model, encoder=large)


def test_wrong_shapes_and_dtypes_are_refused() -> None:
    model = _examples()
    with pytest.raises(CondVAEError, match=r"decoder: returned shape \[4, 784\], expected \[N, 1, 20, 20\]"):
        condvae.wrap(model.decode, 4, (1, 20, 20), decoder_output="probs")
    with pytest.raises(CondVAEError, match=r"decoder: calling it on \[4, 8\] float32 input failed"):
        condvae.wrap(model.decode, 8, (1, 28, 28), decoder_output="probs")
    with pytest.raises(CondVAEError, match=r"decoder: returned a tuple, expected a tensor"):
        condvae.wrap(lambda z: (z, z), 4, (4,))
    with pytest.raises(CondVAEError, match=r"decoder: returned dtype float64 for float32 z"):
        condvae.wrap(lambda z: model.fc4(model.fc3(z)).double(), 4, (1, 28, 28))
    with pytest.raises(CondVAEError, match=r"encoder: returned mu of shape \[4, 3\], expected \[4, 4\]"):
        _wrap_examples(model, encoder=lambda x: (model.encode(x)[0][:, :3], model.encode(x)[1][:, :3]))
    with pytest.raises(
        CondVAEError, match=r"encoder: returned 3 values, expected two tensors \(mu, logvar\)"
    ):
        _wrap_examples(model, encoder=lambda x: (*model.encode(x), x))
    with pytest.raises(CondVAEError, match=r"encoder: returned a distribution with batch shape \[4, 4\]"):
        _wrap_examples(model, encoder=lambda x: Normal(*model.encode(x)[:1], 1.0), encoder_output=None)


def test_a_nondeterministic_decoder_is_refused_and_the_rng_left_alone() -> None:
    linear = nn.Linear(2, 6)
    with pytest.raises(CondVAEError, match=r"decoder: two calls on the same z gave different outputs"):
        condvae.wrap(lambda z: linear(z) + torch.randn(len(z), 6), 2, (6,))
    dropout = nn.Sequential(nn.Linear(2, 6), nn.Dropout(0.5)).train()
    vae = condvae.wrap(dropout, 2, (6,))  # eval mode: dropout off, so deterministic
    assert not dropout.training and not vae.training
    model = _examples()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    _wrap_examples(model)
    assert torch.equal(torch.rand(3), expected)  # the probe used its own seeded RNG


def test_bound_methods_plain_callables_and_submodules() -> None:
    model = _examples()
    vae = _wrap_examples(model)
    assert {"model.fc1.weight", "model.fc4.bias"} <= set(vae.state_dict())
    assert vae.decoder_path == "decode" and vae.encoder_path == "encode"
    plain = condvae.wrap(lambda z: model.fc4(torch.relu(model.fc3(z))), 4, (1, 28, 28))
    z = torch.randn(2, 3, 4)
    assert plain.decode(z).batch_shape == (2, 3, 1, 28, 28)

    class Parts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = nn.Sequential(nn.Linear(3, 12), nn.Unflatten(1, (1, 3, 4)))
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))

        def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            loc, pre = self.enc(x).chunk(2, -1)
            return loc, nn.functional.softplus(pre)

    parts = Parts()
    two = condvae.wrap(parts.dec, 3, (1, 3, 4), encoder=parts.encode)  # encode's module holds dec
    assert (two.decoder_path, two.encoder_path) == ("dec", "encode")
    apart = condvae.wrap(parts.dec, 3, (1, 3, 4), encoder=Parts().encode)
    with pytest.raises(CondVAEError, match="model: the decoder and encoder belong to two different modules"):
        apart.config()
    joined = condvae.wrap(parts.dec, 3, (1, 3, 4), encoder=parts.encode, model=parts, check=False)
    assert (joined.decoder_path, joined.encoder_path) == ("dec", "encode")


def test_adapters_give_the_hand_written_elbo() -> None:
    """Against the PyTorch examples' own loss: BCE(decode(z), x) + KL with
    KL = -1/2 sum(1 + logvar - mu^2 - exp(logvar)) (Kingma & Welling 2014, appendix B)."""
    model = _examples()
    vae = _wrap_examples(model)
    x = _binary(3)
    flat = x.view(3, -1)
    z = torch.randn(5, 3, 4)
    by_hand = torch.distributions.Bernoulli(probs=model.decode(z)).log_prob(flat).sum(-1)
    torch.testing.assert_close(vae.log_likelihood(x, z), by_hand)
    mu, logvar = model.encode(flat)
    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)
    torch.testing.assert_close(torch.distributions.kl_divergence(vae.encode(x), vae.prior), kl)
    torch.manual_seed(0)
    elbo = vae.elbo(x)
    torch.manual_seed(0)
    drawn = vae.encode(x).rsample((1,))[0]
    bce = nn.functional.binary_cross_entropy(model.decode(drawn), flat, reduction="none").sum(-1)
    torch.testing.assert_close(elbo, -(bce + kl))
    log_std = condvae.wrap(
        model.decode,
        4,
        (1, 28, 28),
        decoder_output="probs",
        encoder=lambda v: (model.encode(v)[0], 0.5 * model.encode(v)[1]),
        encoder_input="flat",
        encoder_output="loc_logscale",
    )
    torch.testing.assert_close(log_std.encode(x).stddev, (0.5 * logvar).exp())


def test_save_load_round_trip_by_reference(tmp_path: Path) -> None:
    model = _examples()
    vae = _wrap_examples(model, source=SOURCE, source_kwargs=TINY)
    saved = condvae.save_pretrained(vae, tmp_path / "mine", card={"dataset": "mnist"})
    config = json.loads((saved / "config.json").read_text())["model"]
    assert config == {
        "architecture": "wrapped",
        "source": SOURCE,
        "source_kwargs": TINY,
        "decoder": "decode",
        "encoder": "encode",
        "decoder_output": "probs",
        "encoder_output": "mu_logvar",
        "encoder_input": "flat",
        "latent_dim": 4,
        "data_shape": [1, 28, 28],
        "likelihood": "bernoulli",
        "scale": 0.1,
    }
    back = condvae.load(saved)
    assert isinstance(back.model, VAE) and back.card["dataset"] == "mnist"
    z, x = torch.randn(6, 4), _binary(2)
    torch.testing.assert_close(back.decode(z).logits, vae.decode(z).logits, rtol=0, atol=0)
    torch.testing.assert_close(back.encode(x).mean, vae.encode(x).mean, rtol=0, atol=0)
    assert fingerprint(back) == fingerprint(vae)
    gaussian = condvae.wrap(model.decode, 4, (1, 28, 28), likelihood="gaussian", scale=0.3, source=SOURCE)
    with pytest.raises(
        CondVAEError, match=r"source: pytorch_examples_vae:VAE\(\*\*\{\}\) builds a module that"
    ):
        condvae.save_pretrained(gaussian, tmp_path / "mismatch")  # the default widths are not these
    gaussian = condvae.wrap(
        model.decode, 4, (1, 28, 28), likelihood="gaussian", scale=0.3, source=SOURCE, source_kwargs=TINY
    )
    with torch.no_grad():
        gaussian.likelihood.log_scale.add_(torch.linspace(0, 1, 784).view(1, 28, 28))
    back = condvae.load(condvae.save_pretrained(gaussian, tmp_path / "gaussian"))
    torch.testing.assert_close(back.decode(z).stddev, gaussian.decode(z).stddev, rtol=0, atol=0)
    assert not (tmp_path / "mismatch").exists()


def test_save_refuses_without_source_and_writes_nothing(tmp_path: Path) -> None:
    vae = _wrap_examples(_examples())
    target = tmp_path / "deep" / "mine"
    with pytest.raises(CondVAEError, match=r"^source: .*pass source='package.module:factory'"):
        condvae.save_pretrained(vae, target)
    assert not target.exists() and not target.parent.exists()
    with pytest.raises(CondVAEError, match=r"source: cannot import 'no_such_package_xyz'"):
        _wrap_examples(_examples(), source="no_such_package_xyz:VAE")
    with pytest.raises(CondVAEError, match=r"source: expected 'package.module:factory'"):
        _wrap_examples(_examples(), source="/tmp/my_vae.py:VAE")  # never a file path
    with pytest.raises(CondVAEError, match=r"decoder: a plain function cannot be saved by reference"):
        condvae.save_pretrained(condvae.wrap(lambda z: z, 2, (2,), source=SOURCE), target)
    assert list(tmp_path.iterdir()) == []


def test_loading_imports_only_the_named_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vae = _wrap_examples(_examples(), source=SOURCE, source_kwargs=TINY)
    saved = condvae.save_pretrained(vae, tmp_path / "mine")
    path = saved / "config.json"
    config = json.loads(path.read_text())
    config["model"]["source"] = "not_installed_anywhere:VAE"
    path.write_text(json.dumps(config))
    (saved / "not_installed_anywhere.py").write_text("raise SystemExit('executed')\n")
    with pytest.raises(CondVAEError, match=r"config: source: cannot import 'not_installed_anywhere'"):
        condvae.load(saved)
    monkeypatch.syspath_prepend(str(saved))  # as if the model's folder were the working directory
    with pytest.raises(
        CondVAEError, match=r"config: source 'not_installed_anywhere:VAE' resolves to .* inside"
    ):
        condvae.load(saved)  # refused before anything runs (the file would raise SystemExit)
    with pytest.raises(CondVAEError, match=r"source: '__main__:VAE' names the running script"):
        _wrap_examples(_examples(), source="__main__:VAE")


def test_save_pretrained_is_atomic_for_any_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = condvae.MLPVAE((1, 6, 6), latent_dim=2, hidden=[8])
    with pytest.raises(CondVAEError, match="card: the config and card must be JSON-serialisable"):
        condvae.save_pretrained(model, tmp_path / "a", card={"bad": object()})

    def broken(path: Path, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "atomic_write_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        condvae.save_pretrained(model, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []  # no directory, no staging folder left
    monkeypatch.undo()
    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    condvae.save_pretrained(model, keep)
    assert sorted(p.name for p in keep.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "notes.txt",
    ]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    back = condvae.load(condvae.save_pretrained(model, tmp_path / "c"))
    torch.manual_seed(5)
    condvae.save_pretrained(model, tmp_path / "d")  # its check builds a model: with its own RNG
    assert torch.equal(torch.rand(3), expected)
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == "0o755"
    torch.testing.assert_close(back.state_dict(), model.state_dict())
