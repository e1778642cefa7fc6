"""Everything a user calls runs on a device other than the CPU and leaves nothing behind on it.

CI has no GPU, so the second device is virtual_device.py's: it keeps CUDA's rules (no CPU
tensor beside a device tensor, no CPU generator drawing device tensors, no ``numpy()``) and
computes with the CPU's kernels, so each answer there must equal the CPU's. Per-method checks
are in test_contract.py; this file covers models, training, metrics, design, the imputer and
whole-dataset conditioning. Loaders and trainers take ``device=``; functions given a model
compute where it is.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from virtual_device import virtual_device

import condvae
from condvae import condition, metrics
from condvae.errors import CondVAEError
from condvae.partial.train import PartialTrainConfig, train_partial_encoder
from condvae.sharded import Settings, condition_dataset, read_results


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), atol=1e-5, rtol=1e-5)


def _items(vae: condvae.VAE, n: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        x = vae.decode(vae.prior.sample((n,))).mean
    return x.round() if vae.likelihood.name == "bernoulli" else x


def test_the_virtual_device_refuses_what_cuda_refuses() -> None:
    with virtual_device() as device:
        a = torch.ones(3, device=device)
        with pytest.raises(RuntimeError, match="same device"):
            a + torch.ones(3)
        assert (a + torch.tensor(2.0)).device == device  # a 0-d CPU scalar is allowed, as on CUDA
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(3, device=device, generator=torch.Generator())
        with pytest.raises(TypeError, match="numpy"):
            a.numpy()
        w = torch.randn(3, device=device, requires_grad=True)
        (w * a).sum().backward()
        assert w.grad is not None and w.grad.device == device
        assert torch.tensor([1.0], device=device).device == device and a.cpu().device.type == "cpu"
        assert a.tolist() == [1.0, 1.0, 1.0] and f"{a.sum():.1f}" == "3.0"


@pytest.mark.parametrize("name", ["mnist-mlp-z2", "frey-conv-z10", "mnist-hier-z28", "wine-tab-z4"])
def test_bundled_models_condition_there(name: str) -> None:
    on_cpu = condvae.load(name)
    x = _items(on_cpu)
    mask = condvae.make_mask("random:0.5", on_cpu.data_shape)
    methods = [("gvi", {"steps": 5}), ("importance", {"particles": 64})]
    if name != "frey-conv-z10":  # the others ship a partial encoder
        methods.append(("ipa", {}))
    with virtual_device() as device:
        vae = condvae.load(name, device=device)
        assert vae.device == device
        for method, options in methods:
            there = condition(
                vae,
                x,
                condvae.make_mask("random:0.5", vae.data_shape, device=device),
                method=method,
                **options,
            )
            here = condition(on_cpu, x, mask, method=method, **options)
            means = there.complete(2, mean=True)
            assert means.device == device
            _same(means, here.complete(2, mean=True))


def test_a_pyramid_samples_there() -> None:
    name = sorted(p.name for p in (Path(condvae.__file__).parent / "pretrained" / "pyramids").iterdir())[0]
    torch.manual_seed(1)
    here = condvae.load_pyramid(name).sample(2)
    with virtual_device() as device:
        torch.manual_seed(1)
        there = condvae.load_pyramid(name, device=device).sample(2)
        assert there.device == device
        _same(there, here)


def test_metrics_answer_on_the_device_of_their_inputs() -> None:
    on_cpu = condvae.load("mnist-mlp-z2")
    x, mask = _items(on_cpu, 2), condvae.make_mask("top-half", on_cpu.data_shape)
    with virtual_device() as device:
        vae = condvae.load("mnist-mlp-z2", device=device)
        xd, md = x.to(device), mask.to(device).expand(2, *vae.data_shape)
        completions = condition(vae, x, mask, method="gvi", steps=5).complete(8)
        probs = completions.mean(0)
        answers = {
            "reference": metrics.reference_query_log_likelihood(vae, x, mask, particles=64).value,
            "exact": metrics.exact_query_log_likelihood(vae, x, mask, particles=64, grid_size=16),
            "coverage": metrics.coverage(completions, xd, md),
            "diversity": metrics.diversity(completions, md),
            "mmd": metrics.mmd(completions.flatten(2), completions.flatten(2).flip(0)),
            "intervals": metrics.interval_coverage(completions, xd, md).overall,
            "pit": metrics.pit(completions, xd, md),
            "crps": metrics.crps(completions, xd, md),
            "brier": metrics.brier_score(probs, xd, md),
            "iw": metrics.iw_log_likelihood(vae, xd, 8),
            "ais": metrics.ais_log_evidence(vae, x, mask, particles=4, temperatures=5),
        }
        assert {k: v.device for k, v in answers.items()} == {k: device for k in answers}
        assert 0 <= metrics.expected_calibration_error(probs, xd, md) <= 1


@pytest.mark.parametrize("model", ["mnist-mlp-z2", "wine-tab-z4"])
def test_design_runs_there(model: str) -> None:
    vae = condvae.load(model)
    x = _items(vae, 2)
    here = condvae.design.design(model, x, steps=2, completions=4)
    with virtual_device() as device:
        there = condvae.design.design(model, x, steps=2, completions=4, device=device)
        assert there.gains.device == device and torch.equal(
            torch.as_tensor(there.order).cpu(), torch.as_tensor(here.order)
        )
        _same(there.gains.nan_to_num(0), here.gains.nan_to_num(0))
        with pytest.raises(CondVAEError, match="^device: the model is on cpu"):
            condvae.design.problem(vae, device=device)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-5, rtol=1e-5, msg=key)


def test_training_there_gives_the_cpu_weights(tmp_path: Path) -> None:
    images = (torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    runs = {}
    for where in ("cpu", "virtual"):
        with virtual_device() as device:
            dev = device if where == "virtual" else "cpu"
            table = condvae.train_vae("wine", epochs=2, device=dev, out=tmp_path / f"table-{where}")
            image = condvae.train_vae(
                images, epochs=1, hidden=(16,), device=dev, out=tmp_path / f"image-{where}"
            )
            partial = train_partial_encoder(
                PartialTrainConfig(
                    vae="wine-tab-z4", steps=3, batch_size=16, device=dev, out=str(tmp_path / f"p-{where}")
                )
            )
            if where == "virtual":
                assert table.model.device == image.model.device == device
                assert next(partial.encoder.parameters()).device == device
            runs[where] = (
                copy.deepcopy(table.model).cpu(),
                copy.deepcopy(image.model).cpu(),
                partial.encoder.cpu(),
            )
    for a, b in zip(runs["cpu"], runs["virtual"], strict=True):
        _assert_same_weights(a, b)


def test_the_imputer_runs_there() -> None:
    from sklearn.datasets import load_wine

    rows = load_wine().data[:80].copy()
    rows[::7, 2] = np.nan
    here = condvae.CondVAEImputer(epochs=2, random_state=0).fit_transform(rows)
    with virtual_device() as device:
        there = condvae.CondVAEImputer(epochs=2, random_state=0, device=device).fit_transform(rows)
    assert isinstance(there, np.ndarray) and not np.isnan(there).any()
    np.testing.assert_allclose(there, here, rtol=1e-4, atol=1e-4)


def test_a_dataset_conditioned_there_matches(tmp_path: Path) -> None:
    settings = Settings(
        model="wine-tab-z4",
        dataset="wine+target:test",
        mask="random:0.3",
        method="gvi",
        options={"steps": 5},
        limit=6,
        chunk=4,
    )
    condition_dataset(settings, tmp_path / "cpu", progress=False)
    with virtual_device() as device:
        condition_dataset(settings, tmp_path / "there", device=device, progress=False)
    here, there = read_results(tmp_path / "cpu"), read_results(tmp_path / "there")
    for key in ("z", "completions", "c_elbo"):
        assert there[key].device.type == "cpu"  # shards are read back onto the CPU
        _same(there[key].float(), here[key].float())


def test_masks_are_made_where_asked() -> None:
    with virtual_device() as device:
        one = condvae.make_mask("random:0.3", (1, 4, 4), seed=2, device=device)
        many = condvae.sample_masks("box", 3, (1, 8, 8), torch.Generator().manual_seed(1), device=device)
        assert one.device == many.device == device
        _same(one, condvae.make_mask("random:0.3", (1, 4, 4), seed=2))
        _same(many, condvae.sample_masks("box", 3, (1, 8, 8), torch.Generator().manual_seed(1)))
    with pytest.raises(CondVAEError, match="^device: 'nowhere'|^device: expected a torch device"):
        condvae.make_mask("top-half", (1, 4, 4), device="nowhere")


def test_the_app_serves_from_the_device() -> None:
    """The service layer's answers (the worker threads' work, run here in the test's thread)."""
    from condvae.app import service
    from condvae.app.bank import ModelBank
    from condvae.app.config import ServeConfig
    from condvae.app.schemas import ConditionRequest, DesignRequest

    vae = condvae.load("mnist-mlp-z2")
    digit = _items(vae, 1)[0, 0].int().tolist()
    top = [[int(r < 14)] * 28 for r in range(28)]
    asks = [
        ConditionRequest(model="mnist-mlp-z2", x=digit, mask=top, method=m, options=o, n=2, arrays=True)
        for m, o in (("ipa", {}), ("gvi", {"steps": 5}))
    ]
    design = DesignRequest(model="mnist-mlp-z2", x=digit, mask=top, completions=4)

    def answers(device: str) -> tuple[list[dict], list[dict]]:
        cfg = ServeConfig(models=["mnist-mlp-z2"], device=device)
        bank = ModelBank(cfg)
        assert str(bank.vae("mnist-mlp-z2").device) == device
        conditioned = [service.run_conditions([service.prepare_condition(bank, cfg, a)])[0] for a in asks]
        return conditioned, service.run_designs(bank, [service.prepare_design(bank, cfg, design)])

    here = answers("cpu")
    with virtual_device() as device:
        there = answers(str(device))
    for a, b in zip(here[0], there[0], strict=True):
        np.testing.assert_allclose(b["arrays"]["completions"], a["arrays"]["completions"], atol=1e-5)
        assert b["c_elbo"] == pytest.approx(a["c_elbo"], abs=1e-3)
    ranked = [
        [(c["name"], round(c["eig"], 4)) for c in answer[1][0]["candidates"]] for answer in (here, there)
    ]
    assert ranked[0] == ranked[1] and there[1][0]["heat"] == here[1][0]["heat"]


def test_mixed_precision_where_autocast_is_missing_says_so() -> None:
    with virtual_device() as device:  # torch has no autocast for this device type
        vae = condvae.load("mnist-mlp-z2", device=device)
        x, mask = _items(vae, 1), condvae.make_mask("top-half", vae.data_shape)
        with (
            condvae.mixed_precision(),
            pytest.raises(CondVAEError, match="^mixed_precision: torch has no autocast"),
        ):
            condition(vae, x, mask, method="gvi", steps=2)


def test_a_wrapped_user_model_conditions_where_its_decoder_is() -> None:
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6))
    x, mask = torch.randn(2, 6), torch.tensor([True, True, True, False, False, False])
    here = condition(
        condvae.wrap(decoder, latent_dim=2, data_shape=(6,), likelihood="gaussian"),
        x,
        mask,
        method="gvi",
        steps=5,
    )
    with virtual_device() as device:
        vae = condvae.wrap(
            copy.deepcopy(decoder).to(device), latent_dim=2, data_shape=(6,), likelihood="gaussian"
        )
        assert vae.device == device
        there = condition(vae, x, mask, method="gvi", steps=5)
        _same(there.complete(3, mean=True), here.complete(3, mean=True))
