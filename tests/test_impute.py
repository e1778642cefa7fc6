"""CondVAEImputer: scikit-learn's estimator checks, the imputation contract, bad inputs, the CLI."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

import condvae
from condvae.cli import main
from condvae.errors import CondVAEError
from condvae.impute import CondVAEImputer

REPO = Path(__file__).resolve().parents[1]
# Tiny settings: each fit takes a few tens of milliseconds on scikit-learn's small test tables.
FAST = {
    "epochs": 2,
    "hidden": (8,),
    "latent_dim": 2,
    "importance_samples": 2,
    "n_draws": 4,
    "patience": 0,
    "method_options": {"particles": 16},
}
pytestmark = pytest.mark.filterwarnings("ignore:train_vae:UserWarning")  # undertrained on purpose


@parametrize_with_checks([CondVAEImputer(**FAST)])
def test_sklearn_estimator_checks(estimator: CondVAEImputer, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


@pytest.mark.parametrize(
    "check",
    [
        "check_set_output_transform",
        "check_set_output_transform_pandas",
        "check_global_output_transform_pandas",
        "check_transformer_get_feature_names_out",
        "check_transformer_get_feature_names_out_pandas",
    ],
)
def test_sklearn_output_checks(check: str) -> None:
    """The set_output checks, which check_estimator does not run in scikit-learn 1.9."""
    pytest.importorskip("pandas")
    getattr(estimator_checks, check)("CondVAEImputer", CondVAEImputer(**FAST))


def _table(n: int = 60, d: int = 4, rate: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated rows with full-precision values, and the same with ``rate`` of them NaN."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1)) @ rng.normal(size=(1, d)) + 0.3 * rng.normal(size=(n, d))
    holes = x.copy()
    holes[rng.random(x.shape) < rate] = np.nan
    return x, holes


def test_observed_values_bit_identical_and_holes_filled() -> None:
    _, x = _table()
    out = CondVAEImputer(**FAST, random_state=0).fit_transform(x)
    observed = ~np.isnan(x)
    assert out.dtype == np.float64 and out.shape == x.shape
    assert np.array_equal(out[observed].view(np.uint64), x[observed].view(np.uint64))
    assert np.isfinite(out).all()


def test_complete_rows_pass_through_unconditioned(monkeypatch: pytest.MonkeyPatch) -> None:
    full, x = _table()
    imputer = CondVAEImputer(**FAST, random_state=0).fit(x)
    seen: list[int] = []
    real = condvae.impute.condition

    def spy(vae, rows, mask, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(rows.shape[0])
        return real(vae, rows, mask, **kwargs)

    monkeypatch.setattr(condvae.impute, "condition", spy)
    assert np.array_equal(imputer.transform(full), full) and not seen
    mixed = np.vstack([full[:5], x[5:]])
    out = imputer.transform(mixed)
    assert np.array_equal(out[:5], full[:5])
    assert sum(seen) == int(np.isnan(mixed).any(1).sum())  # only rows with holes are conditioned


def test_rows_are_imputed_independently_of_their_batch() -> None:
    _, x = _table()
    imputer = CondVAEImputer(**FAST, random_state=0).fit(x)
    whole = imputer.transform(x)
    assert np.array_equal(imputer.transform(x[10:20]), whole[10:20])


def test_pandas_in_pandas_out() -> None:
    pd = pytest.importorskip("pandas")
    _, x = _table()
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"], index=[f"r{i}" for i in range(len(x))])
    out = CondVAEImputer(**FAST, random_state=0).fit(frame).transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["a", "b", "c", "d"] and list(out.index) == list(frame.index)
    assert not out.isna().any().any()
    observed = frame.notna().to_numpy()
    assert np.array_equal(out.to_numpy()[observed], x[observed])


def test_sample_posterior_follows_random_state() -> None:
    _, x = _table()

    def draw(seed: int) -> np.ndarray:
        return CondVAEImputer(**FAST, sample_posterior=True, random_state=seed).fit_transform(x)

    first, again, other = draw(1), draw(1), draw(2)
    holes = np.isnan(x)
    assert np.array_equal(first, again)
    assert not np.allclose(first[holes], other[holes])


def test_sample_gives_draws_with_the_evidence_in_place() -> None:
    _, x = _table()
    imputer = CondVAEImputer(**FAST, random_state=0).fit(x)
    draws = imputer.sample(x[:7], 5)
    assert draws.shape == (5, 7, 4)
    observed = ~np.isnan(x[:7])
    assert (draws[:, observed] == x[:7][observed]).all()
    holes = np.isnan(x[:7])
    assert holes.any() and draws[:, holes].std(0).min() > 0  # draws, not one value repeated


def test_constant_column_is_imputed_by_its_constant() -> None:
    _, x = _table()
    x[:, 2] = np.where(np.isnan(x[:, 2]), np.nan, 7.25)
    imputer = CondVAEImputer(**FAST, random_state=0).fit(x)
    assert imputer.constants_ == {2: 7.25} and list(imputer.modelled_) == [0, 1, 3]
    assert (imputer.transform(x)[:, 2] == 7.25).all()


def test_binary_and_categorical_columns_get_one_of_their_values() -> None:
    rng = np.random.default_rng(1)
    u = rng.normal(size=80)
    x = np.stack([u, (u > 0).astype(float), np.digitize(u, [-0.5, 0.5]) + 3.0, -u], axis=1)
    holes = np.where(rng.random(x.shape) < 0.3, np.nan, x)
    imputer = CondVAEImputer(**FAST, random_state=0).fit(holes)
    assert [c["kind"] for c in imputer.columns_] == ["gaussian", "bernoulli", "categorical", "gaussian"]
    for out in (imputer.transform(holes), imputer.sample(holes, 3)[1]):
        assert set(np.unique(out[:, 1])) <= {0.0, 1.0} and set(np.unique(out[:, 2])) <= {3.0, 4.0, 5.0}


def test_missing_values_marker() -> None:
    _, x = _table()
    marked = np.where(np.isnan(x), -1.0, x)
    out = CondVAEImputer(**FAST, missing_values=-1.0, random_state=0).fit_transform(marked)
    assert not (out == -1.0).any()
    observed = ~np.isnan(x)
    assert np.array_equal(out[observed], x[observed])
    with pytest.raises(CondVAEError, match="^X: contains NaN but missing_values=-1.0"):
        CondVAEImputer(**FAST, missing_values=-1.0).fit(x)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_bad_inputs_are_refused_in_one_line() -> None:
    pd = pytest.importorskip("pandas")
    _, x = _table()
    empty = x.copy()
    empty[:, 1] = np.nan
    with pytest.raises(CondVAEError, match="^X: column 'x1' \\(index 1\\) is entirely missing") as exc:
        CondVAEImputer(**FAST).fit(empty)
    _one_line(exc)
    frame = pd.DataFrame({"a": x[:, 0], "b": ["u", "v"] * 30})
    with pytest.raises(CondVAEError, match="^X: non-numeric columns 'b'") as exc:
        CondVAEImputer(**FAST).fit(frame)
    _one_line(exc)
    named = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    imputer = CondVAEImputer(**FAST).fit(named)
    with pytest.raises(CondVAEError, match="^X: The feature names should match") as exc:
        imputer.transform(named.rename(columns={"a": "z"}))
    assert "unseen at fit time: - z" in _one_line(exc)
    with pytest.raises(CondVAEError, match="^X has 3 features, but CondVAEImputer is expecting 4") as exc:
        imputer.transform(x[:, :3])
    _one_line(exc)
    with pytest.raises(NotFittedError):
        CondVAEImputer(**FAST).transform(x)
    with pytest.raises(CondVAEError, match="^method: unknown 'nope'"):
        CondVAEImputer(**{**FAST, "method": "nope"}).fit(x)
    with pytest.raises(CondVAEError, match="^method_options: \\['steps'\\] not known"):
        CondVAEImputer(**{**FAST, "method_options": {"steps": 3}}).fit(x)
    with pytest.raises(CondVAEError, match="^X: 1 sample"):
        CondVAEImputer(**FAST).fit(x[:1])


def test_accuracy_on_a_low_rank_gaussian_table() -> None:
    """Rows x = u w + noise (rank 1, noise sd 0.1): a hidden entry is predictable from any
    observed one, so the imputer must beat the column mean by far. By hand: the column mean's
    RMSE is about the column's sd, |w_d| (here 0.6 to 1.9), while the best possible is about
    0.1-0.3 (noise plus the uncertainty about u from the row's other entries); measured 0.19
    against 1.28."""
    rng = np.random.default_rng(3)
    w = np.array([[1.5, -1.0, 0.8, 1.2, -0.6, 1.9]])
    x = rng.normal(size=(200, 1)) @ w + 0.1 * rng.normal(size=(200, 6))
    hidden = rng.random(x.shape) < 0.3
    holes = np.where(hidden, np.nan, x)
    settings = {"epochs": 150, "hidden": (32,), "latent_dim": 2, "lr": 3e-3, "patience": 0, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = CondVAEImputer(**settings).fit_transform(holes)
    rmse = np.sqrt(np.mean((out[hidden] - x[hidden]) ** 2))
    mean = np.sqrt(np.mean((np.nanmean(holes, 0)[None].repeat(200, 0)[hidden] - x[hidden]) ** 2))
    assert rmse < 0.5 * mean, (rmse, mean)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_cli_impute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, x = _table(n=40, d=3)
    rows = [["a", "b", "c"]] + [["" if np.isnan(v) else repr(float(v)) for v in row] for row in x]
    rows[1][0] = "1"  # an observed cell written as an integer stays as written
    table, out = tmp_path / "table.csv", tmp_path / "imputed.csv"
    _write_csv(table, rows)
    argv = ["impute", str(table), "--out", str(out), "--epochs", "2", "--draws", "4", "--no-progress"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    with open(out, newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == ["a", "b", "c"] and len(written) == len(rows)
    for given, got in zip(rows[1:], written[1:], strict=True):
        for cell, new in zip(given, got, strict=True):
            assert new == cell if cell else np.isfinite(float(new))
    assert main([*argv, "--sample-posterior", "--seed", "3"]) == 0


def test_cli_impute_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "table.csv"
    _write_csv(table, [["a", "b"], ["1", "x"], ["2", ""], ["3", "4"]])
    assert main(["impute", str(table), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("condvae: error: name:") and "'b'" in err and "\n" not in err
    assert main(["impute", str(table), "--out", str(table)]) == 2
    assert "condvae: error: out:" in capsys.readouterr().err


def test_readme_imputer_example_runs() -> None:
    """The README's "Imputing a table with missing values" block, executed as written."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Imputing a table with missing values", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), namespace)
    filled, draws = namespace["filled"], namespace["draws"]
    assert not filled.isna().any().any()  # type: ignore[attr-defined]
    assert draws.shape[0] == 20  # type: ignore[attr-defined]
