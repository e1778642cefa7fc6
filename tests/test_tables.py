"""Tables: loading, conversion, column types, the tabular VAE, MIWAE training and bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Normal

import condvae
from condvae.data.tables import TABLES, as_array, infer_columns, load_table, split_rows
from condvae.errors import CondVAEError, DataError
from condvae.loop import CHECKPOINT
from condvae.masks import make_mask, sample_masks
from condvae.models import TabularVAE, build_model
from condvae.train import TrainConfig, baseline_log_likelihood, train, train_vae

SHAPES = {"breast_cancer": (569, 30), "diabetes": (442, 10), "wine": (178, 13)}


def _table(n: int = 120, missing: float = 0.0, seed: int = 0) -> np.ndarray:
    """A small mixed table: 3 correlated gaussian columns, a 0/1 column, a 4-code column."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    x = np.c_[
        z @ rng.normal(size=(2, 3)) * 5 + 10 + 0.1 * rng.normal(size=(n, 3)),
        (z[:, 0] > 0).astype(float) + 2,  # values {2, 3}: bernoulli
        np.clip(np.round(z[:, 1] + 1.5), 0, 3),  # codes 0..3: categorical
    ]
    if missing:
        hole = rng.random(x.shape) < missing
        hole[:, 0] = False  # keep every row with something observed
        x[hole] = np.nan
    return x


def _columns() -> list[dict]:
    return infer_columns(_table(), ["a", "b", "c", "flag", "level"])


def test_bundled_tables_and_splits() -> None:
    for name, (rows, width) in SHAPES.items():
        parts = {s: load_table(name, s) for s in ("train", "valid", "test")}
        assert sum(len(t) for t in parts.values()) == rows
        assert all(t.x.shape[1] == width and len(t.columns) == width for t in parts.values())
        assert len(parts["test"]) == len(parts["valid"]) == round(0.15 * rows)
        index = np.concatenate([split_rows(rows, s) for s in ("train", "valid", "test")])
        assert sorted(index.tolist()) == list(range(rows))  # disjoint and complete
        assert np.array_equal(load_table(name, "test").x, parts["test"].x)  # fixed
        assert parts["train"].target is not None and parts["train"].x.dtype == np.float64
    assert set(TABLES) == set(SHAPES)
    wine = load_table("wine", "all", with_target=True)
    assert wine.x.shape == (178, 14) and wine.columns[-1] == "target"
    assert infer_columns(wine.x, wine.columns)[-1]["kind"] == "categorical"
    diabetes = infer_columns(*(lambda t: (t.x, t.columns))(load_table("diabetes", "all")))
    assert diabetes[1]["kind"] == "bernoulli" and diabetes[0]["kind"] == "gaussian"  # sex, age


def test_csv_tables(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,x\n3,,5\n")
    with pytest.raises(DataError, match=r"^name: .* non-numeric columns: 'c'$"):
        load_table(f"csv:{path}", "all")
    path.write_text("a,b\n1,2\n3,NA\n5,?\n")
    table = load_table(f"csv:{path}", "all")
    assert table.columns == ["a", "b"] and np.isnan(table.x[1:, 1]).all() and table.target is None
    with pytest.raises(DataError, match="^name: cannot read"):
        load_table(f"csv:{tmp_path / 'none.csv'}")
    with pytest.raises(DataError, match="^name: unknown table 'iris'"):
        load_table("iris")


def test_as_array_takes_numpy_pandas_torch_and_lists() -> None:
    want = np.array([[1.0, np.nan], [3.0, 4.0]])
    frame = pd.DataFrame({"p": [1.0, 3.0], "q": pd.array([None, 4], dtype="Int64")})
    for data, names in [
        (want, ["x0", "x1"]),
        (frame, ["p", "q"]),
        (torch.tensor(want), ["x0", "x1"]),
        ([[1, None], [3, 4]], ["x0", "x1"]),
    ]:
        x, got = as_array(data)
        assert got == names and x.dtype == np.float64
        assert np.array_equal(x, want, equal_nan=True)
    x, _ = as_array([[1, -1], [3, 4]], missing_values=-1)
    assert np.isnan(x[0, 1])


def test_as_array_refuses_bad_tables() -> None:
    cases = [
        (pd.DataFrame({"a": [1.0], "city": ["Paris"]}), r"^X: non-numeric columns 'city'"),
        ([[1, "b"], [2, "c"]], r"^X: non-numeric columns 'x1'$"),
        (np.array([[1.0, np.inf]]), r"^X: column 'x1' has infinite values$"),
        (np.zeros(3), r"^X: expected a 2-d table \[N, D\], got shape \(3,\)$"),
        (np.zeros((0, 3)), r"^X: the table is empty"),
    ]
    for data, message in cases:
        with pytest.raises(DataError, match=message):
            as_array(data)
    with pytest.raises(DataError, match="^train_data: "):
        as_array(np.zeros(3), argument="train_data")


def test_infer_columns() -> None:
    specs = _columns()
    assert [c["kind"] for c in specs] == ["gaussian"] * 3 + ["bernoulli", "categorical"]
    assert specs[3]["values"] == [2.0, 3.0] and specs[4]["values"] == [0.0, 1.0, 2.0, 3.0]
    x = _table()
    assert specs[0]["loc"] == pytest.approx(x[:, 0].mean()) and specs[0]["scale"] == pytest.approx(
        x[:, 0].std()
    )
    many = np.arange(40, dtype=float)[:, None] % 12  # 12 integer values: too many categories
    assert infer_columns(many)[0]["kind"] == "gaussian"
    with pytest.raises(DataError, match=r"^X: column 'b' is entirely missing; drop it$"):
        infer_columns(np.array([[1.0, np.nan], [2.0, np.nan]]), ["a", "b"])
    with pytest.raises(DataError, match=r"^X: column 'a' is constant \(7\); drop it$"):
        infer_columns(np.array([[7.0, 1.0], [7.0, np.nan], [7.0, 2.0]]), ["a", "b"])


def test_to_model_and_back() -> None:
    x = _table(missing=0.2)
    vae = TabularVAE(_columns(), latent_dim=2, hidden=[8])
    m = vae.to_model(x)
    assert m.dtype == torch.float32 and torch.equal(torch.isnan(m), torch.from_numpy(np.isnan(x)))
    assert set(m[:, 3][~torch.isnan(m[:, 3])].tolist()) <= {0.0, 1.0}
    back = vae.from_model(m).numpy()
    observed = ~np.isnan(x)
    assert np.array_equal(back[:, 3:][observed[:, 3:]], x[:, 3:][observed[:, 3:]])  # codes: bit for bit
    g = observed[:, :3]
    assert np.allclose(back[:, :3][g], x[:, :3][g], rtol=1e-6, atol=1e-5)  # float32 model space
    assert np.isnan(back[~observed]).all()
    standard = vae.to_model(x)[:, :3]
    assert abs(float(torch.nanmean(standard))) < 0.2  # standardised
    with pytest.raises(
        DataError, match=r"^x: column 'flag' has the value 5, not one of its bernoulli values"
    ):
        vae.to_model(np.array([[1.0, 1, 1, 5, 0]]))
    with pytest.raises(DataError, match=r"^x: the model has 5 columns \(a, b, c, flag, \.\.\.\), got shape"):
        vae.to_model(np.zeros((2, 4)))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "flag", "level"])
    assert torch.equal(vae.to_model(frame).isnan(), m.isnan())
    with pytest.raises(DataError, match=r"^x: columns \['z'\] differ from the model's"):
        vae.to_model(frame.rename(columns={"a": "z"}))
    with pytest.raises(DataError, match=r"^x: columns \['b', 'a', 'c'\] differ"):
        vae.to_model(frame[["b", "a", "c", "flag", "level"]])


def test_save_load_round_trip(tmp_path: Path) -> None:
    vae = TabularVAE(_columns(), latent_dim=2, hidden=[8])
    condvae.save_pretrained(vae, tmp_path / "m")
    again = condvae.load(tmp_path / "m")
    assert isinstance(again, TabularVAE) and again.columns == vae.columns
    x = vae.to_model(_table(missing=0.2)[:5])
    torch.manual_seed(0)
    a = vae.iwae(x, 4)
    torch.manual_seed(0)
    assert torch.equal(a, again.iwae(x, 4))
    assert build_model(vae.config()).data_shape == (5,)


def test_likelihood_matches_torch_distributions() -> None:
    vae = TabularVAE(_columns(), latent_dim=2, hidden=[8])
    with torch.no_grad():
        vae.likelihood.log_scale.copy_(torch.tensor([-0.3, 0.1, 0.4]))
    z = torch.randn(3, 6, 2)
    x = vae.to_model(_table()[:6])
    dist = vae.decode(z)
    assert dist.batch_shape == (3, 6, 5)
    raw = vae.decoder(z)
    scale = torch.tensor([-0.3, 0.1, 0.4]).exp()
    want = torch.stack(
        [
            *(Normal(raw[..., j], scale[j]).log_prob(x[:, j]) for j in range(3)),
            Bernoulli(logits=raw[..., 3]).log_prob(x[:, 3]),
            Categorical(logits=raw[..., 4:8]).log_prob(x[:, 4].long()),
        ],
        -1,
    )
    assert torch.allclose(dist.log_prob(x), want, atol=1e-5)
    assert torch.equal(dist.mean[..., 4], raw[..., 4:8].argmax(-1).float())  # the most probable code
    assert torch.allclose(dist.mean[..., 3], torch.sigmoid(raw[..., 3]))
    sample = dist.sample()
    assert sample.shape == (3, 6, 5) and set(sample[..., 4].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    mask = torch.rand(6, 5) < 0.5
    ll = vae.log_likelihood(torch.where(mask, x, torch.nan), z, mask)
    assert torch.allclose(ll, (want * mask).sum(-1), atol=1e-5)


def test_miwae_loss_matches_a_hand_computation() -> None:
    torch.manual_seed(1)
    vae = TabularVAE(_columns(), latent_dim=2, hidden=[8])
    x = vae.to_model(_table(missing=0.3)[:4])
    mask = ~torch.isnan(x)
    torch.manual_seed(7)
    bound = vae.iwae(x, 6)
    torch.manual_seed(7)
    x0 = torch.where(mask, x, torch.zeros_like(x))
    feats = torch.cat(
        [x0[:, :3], x0[:, 3:4], torch.nn.functional.one_hot(x0[:, 4].long(), 4) * mask[:, 4:5], mask], -1
    )
    loc, pre = vae.encoder(feats.float()).chunk(2, -1)
    q = Normal(loc, torch.nn.functional.softplus(pre) + 1e-4)
    z = q.rsample((6,))
    raw = vae.decoder(z)
    per = torch.cat(
        [
            Normal(raw[..., :3], 1.0).log_prob(x0[:, :3]),
            Bernoulli(logits=raw[..., 3:4]).log_prob(x0[:, 3:4]),
            Categorical(logits=raw[..., 4:8]).log_prob(x0[:, 4].long())[..., None],
        ],
        -1,
    )
    log_w = (per * mask).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    want = torch.logsumexp(log_w, 0) - math.log(6)
    assert torch.allclose(bound, want, atol=1e-4)
    bound.sum().backward()  # NaN in the unobserved entries never reaches a gradient
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)


def test_training_with_and_without_missing_values(tmp_path: Path) -> None:
    for missing in (0.0, 0.25):
        x = _table(n=100, missing=missing)
        out = tmp_path / f"run{missing}"
        result = train_vae(x, out=out, latent_dim=2, hidden=[16], epochs=6, batch_size=20, patience=0)
        assert result.out == out and set(result.scores) == {"model", "baseline"}
        assert result.steps == 6 * 4  # 85 training rows after the seeded 15 % carve-out
        card = json.loads((out / "model" / "config.json").read_text())["card"]
        assert "MIWAE" in card["training"]["objective"]
        assert ("missing" in card["training"]["objective"]) == bool(missing)
        loaded = condvae.load(out / "model")
        assert torch.equal(loaded.encoder[0].weight, result.model.encoder[0].weight)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import condvae.loop

    x = _table(n=100, missing=0.2)
    settings = {"latent_dim": 2, "hidden": [16], "batch_size": 20, "epochs": 5, "checkpoint_every": 6}
    whole = train_vae(x, out=tmp_path / "a", **settings)
    save, saves = condvae.loop._save, []

    def killed(*args: object) -> None:  # dies right after its second checkpoint
        save(*args)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(condvae.loop, "_save", killed)
    with pytest.raises(KeyboardInterrupt):
        train_vae(x, out=tmp_path / "b", **settings)
    monkeypatch.setattr(condvae.loop, "_save", save)
    assert (tmp_path / "b" / CHECKPOINT).exists()
    again = train_vae(x, out=tmp_path / "b", resume=True, **settings)
    assert again.steps == whole.steps
    assert torch.equal(again.model.decoder[0].weight, whole.model.decoder[0].weight)
    with pytest.raises(CondVAEError, match="already holds a training checkpoint"):
        train_vae(x, out=tmp_path / "b", **settings)


def test_out_none_trains_in_memory() -> None:
    result = train_vae(_table(n=60), latent_dim=2, hidden=[8], epochs=2, patience=0)
    assert result.out is None and isinstance(result.model, TabularVAE)
    assert result.model.card["training"]["steps"] == result.steps


def test_baseline_warning_on_an_untrained_model() -> None:
    # Rare events in four 0/1 columns: the baseline's frequencies beat an untrained decoder's coin flips.
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=(80, 2)), rng.random((80, 4)) < 0.95].astype(float)
    x[0, 2:] = 0.0
    with pytest.warns(UserWarning, match="worse than independent per-column distributions"):
        result = train_vae(x, latent_dim=2, hidden=[8], epochs=1, lr=1e-6, lr_min=0.0, patience=0)
    assert result.warning and result.scores["model"] < result.scores["baseline"]
    assert "warning" in result.model.card["training"]
    vae = result.model
    t = vae.to_model(x)
    base = baseline_log_likelihood(vae.columns, t, t)
    assert base.shape == (80,) and torch.isfinite(base).all()


@pytest.mark.slow
def test_a_trained_table_model_beats_the_baseline() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no baseline warning
        result = train_vae(
            _table(n=300, missing=0.1), latent_dim=2, hidden=[32], epochs=100, lr=3e-3, patience=10
        )
    assert result.scores["model"] > result.scores["baseline"] + 0.5


def test_conditioning_a_table_with_nan_in_the_unobserved_entries() -> None:
    torch.manual_seed(0)
    vae = TabularVAE(_columns(), latent_dim=2, hidden=[8])
    x = vae.to_model(_table(missing=0.3)[:6])
    mask = ~torch.isnan(x)
    mask[:, 1] = False  # query column b (NaN or not)
    x[:, 1] = float("nan")
    for method, options in [("gvi", {"steps": 30}), ("importance", {"particles": 100})]:
        post = condvae.condition(vae, x, mask, method=method, **options)
        done = post.complete(4)
        assert done.shape == (4, 6, 5) and torch.isfinite(done).all()
        assert torch.equal(done[:, mask], x[mask].expand(4, -1))
        raw = vae.from_model(done)
        assert set(raw[..., 3].unique().tolist()) <= {2.0, 3.0}


def test_partial_encoder_trains_on_a_table_with_missing_values(tmp_path: Path) -> None:
    from condvae.partial import PartialTrainConfig, train_partial_encoder

    torch.manual_seed(0)
    vae = TabularVAE(_columns(), latent_dim=2, hidden=[8])
    x = vae.to_model(_table(n=120, missing=0.3))
    cfg = PartialTrainConfig(vae="given", out=str(tmp_path), steps=20, valid_every=10, batch_size=20)
    result = train_partial_encoder(cfg, progress=False, vae=vae, data=(x[:100], x[100:]))
    assert result.best_valid is not None and math.isfinite(result.best_valid)
    mask = ~torch.isnan(x[:5])
    mask[:, 0] = False
    post = condvae.condition(vae, x[:5], mask, method="ipa", encoder=str(tmp_path / "encoder"))
    assert torch.isfinite(post.complete(2)).all()
    at_start = type(result.encoder)(vae)  # a copy of the VAE's encoder: r = q where all is observed
    q, r = vae.encode(x[:5]), at_start(x[:5], ~torch.isnan(x[:5]))
    assert torch.allclose(q.mean, r.mean)


def test_train_dispatches_tables_and_images(tmp_path: Path) -> None:
    cfg = TrainConfig(dataset="wine", out=str(tmp_path / "w"), epochs=2, batch_size=32)
    cfg.model = {"architecture": "mlp", "latent_dim": 2, "hidden": [8]}
    result = train(cfg, progress=False)
    assert isinstance(result.model, TabularVAE) and result.model.data_shape == (13,)
    images = torch.rand(40, 1, 4, 4).round()
    out = train_vae(images, latent_dim=2, hidden=[8], epochs=1, batch_size=10, patience=0)
    assert out.model.likelihood.name == "bernoulli" and out.model.data_shape == (1, 4, 4)


def test_bad_input_is_refused_in_one_line(tmp_path: Path) -> None:
    x = _table(n=40)
    standardised = (x - x.mean(0)) / x.std(0)
    cases = [
        (
            lambda: train_vae(standardised, likelihood="bernoulli"),
            r"^likelihood: 'bernoulli' needs 0/1 columns",
        ),
        (lambda: train_vae(np.c_[x, np.full(40, np.nan)]), r"^X: column 'x5' is entirely missing"),
        (lambda: train_vae(np.c_[x, np.ones(40)]), r"^X: column 'x5' is constant"),
        (
            lambda: train_vae(pd.DataFrame({"a": [1.0] * 3, "s": ["u"] * 3})),
            r"^data: non-numeric columns 's'",
        ),
        (lambda: train_vae(x, valid=x[:, :4]), r"^valid: 4 columns, data has 5$"),
        (lambda: train_vae(x, columns=_columns()[:4]), r"^columns: 4 column specs for data with 5 columns$"),
        (lambda: train_vae(x, widht=3), r"^widht: not a setting of train_vae"),
        (lambda: train_vae(x, resume=True), r"^resume: needs the out folder"),
    ]
    for call, message in cases:
        with pytest.raises(CondVAEError, match=message):
            call()
    cfg = TrainConfig(dataset="custom", out=str(tmp_path / "r"))  # the default Bernoulli MLP
    with pytest.raises(CondVAEError, match=r"^likelihood: 'bernoulli' needs values in \[0, 1\]"):
        train(cfg, progress=False, data=(torch.randn(200, 6), None))
    vae = TabularVAE(_columns(), latent_dim=2, hidden=[8])
    with pytest.raises(CondVAEError, match=r"^x: expected shape \[B, 5\]"):
        condvae.condition(vae, torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.bool), method="gvi")
    with pytest.raises(CondVAEError, match=r"^mask: 'top-half' needs image-shaped data"):
        make_mask("top-half", vae.data_shape)
    with pytest.raises(CondVAEError, match=r"^mask: 'box' needs image-shaped data"):
        sample_masks("box", 3, vae.data_shape)
    assert sample_masks("mixture", 3, vae.data_shape).shape == (3, 5)
    with pytest.raises(
        DataError, match=r"^x: column 'level' \(categorical\)|^x: column 'level' has the value 9"
    ):
        vae.to_model(np.array([[1.0, 1, 1, 2, 9]]))


@pytest.mark.slow
def test_readme_tables_example_runs() -> None:
    """The README's "Tables" block, executed as written."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = text.split("## Tables", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the model beats the baseline
        exec(compile(code, "README.md", "exec"), namespace)
    completions, x, mask = namespace["completions"], namespace["x"], namespace["mask"]
    assert completions.shape == (8, 4, 13)  # type: ignore[attr-defined]
    vae = namespace["vae"]
    raw = vae.from_model(x)  # type: ignore[attr-defined]
    assert torch.equal(completions[:, mask], raw[mask].expand(8, -1))  # type: ignore[index]


def test_bundled_table_model_predicts_the_target_by_conditioning() -> None:
    vae = condvae.load("wine-tab-z4")
    table = load_table("wine+target", "test")
    assert table.columns[-1] == "target" and table.name == "wine+target"
    x = vae.to_model(table.x)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, -1] = False  # the class is the query
    post = condvae.condition(vae, x, mask, method="importance", particles=500)
    votes = vae.decode(post.sample(100)).mean[..., -1]  # the most probable class per draw
    predicted = torch.mode(votes, 0).values
    accuracy = float((predicted == x[:, -1]).float().mean())
    assert accuracy > 0.8  # three classes: chance is about 1/3
    card = vae.card["metrics"]
    model = -next(v for k, v in card.items() if k.startswith("test IW-NLL"))
    baseline = next(v for k, v in card.items() if k.startswith("test log-lik of the baseline"))
    assert model > baseline


def test_condvae_train_is_callable() -> None:
    # ``condvae.train`` is the module; calling it trains (it used to be "'module' object is not callable")
    result = condvae.train(_table(n=40), latent_dim=2, hidden=[8], epochs=1, patience=0)  # type: ignore[operator]
    assert isinstance(result.model, TabularVAE) and result.steps >= 1
