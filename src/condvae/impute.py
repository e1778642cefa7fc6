"""A scikit-learn imputer: a tabular VAE trained on the incomplete table, conditioned per row.

``CondVAEImputer().fit(X)`` trains a :class:`condvae.models.TabularVAE` on ``X`` as it is, holes
and all, by maximising the MIWAE bound on the observed entries of each row (Mattei & Frellsen
2019),

    L_K(x_o) = E[ log (1/K) sum_k p(x_o | z_k) p(z_k) / q(z_k | x_o, m) ],  z_k ~ q(z | x_o, m),

so no complete-case subset is needed. ``transform(X)`` conditions the trained model on each
row's observed entries x_o and fills the missing entries x_u from the posterior predictive

    p(x_u | x_o) = E_{p(z | x_o)} p(x_u | z)

approximated by the conditioning ``method`` (default ``"importance"``: self-normalised
importance sampling with the model's own partial encoder q(z | x_o, m) as proposal, which is
MIWAE's imputation). The point imputation is, per column kind:

- gaussian: the posterior predictive mean, (1/S) sum_s E[x_d | z_s] over S = ``n_draws``
  posterior draws z_s (what minimises the expected squared error);
- bernoulli: the more probable value, i.e. (1/S) sum_s p(x_d = 1 | z_s) > 1/2 (the mode);
- categorical: the most frequent value among S draws x_d ~ p(x_d | z_s) (the Monte Carlo mode;
  the mean of an unordered code means nothing).

``sample_posterior=True`` returns one draw x_u ~ p(x_u | x_o) instead, for multiple
imputation (Rubin 1987) as ``IterativeImputer(sample_posterior=True)`` does. Draws are a
function of the row and of the seed drawn from ``random_state`` at ``fit``: a fitted imputer
gives the same draw at every call, imputers fitted with different ``random_state`` values give
different ones, and ``sample(X, n)`` gives n draws at once from one fit (intervals, coverage,
multiple imputation without refitting).

References:
    Mattei & Frellsen, "MIWAE: Deep generative modelling and imputation of incomplete data
    sets", ICML 2019, arXiv:1812.02633.
    Rubin, "Multiple Imputation for Nonresponse in Surveys", 1987.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from condvae.conditioning import METHODS, condition
from condvae.data.tables import infer_columns
from condvae.errors import CondVAEError

# Rows x particles (or draws) per conditioning call: bounds the decoder's batch, so memory
# stays flat however many rows are imputed (answers never depend on batch mates, so chunking
# changes nothing).
_CHUNK = 1 << 18


class NonNumericError(CondVAEError, TypeError):
    """Non-numeric data (a TypeError, as scikit-learn raises for it, and a one-line CondVAEError)."""


def _is_nan_marker(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class CondVAEImputer(TransformerMixin, BaseEstimator):
    """Impute missing values with a VAE trained on the incomplete data (MIWAE) and conditioned per row.

    See the module docstring for the equations. Observed values come back bit-identical; rows
    with nothing missing pass through without conditioning; a column whose observed values
    are all equal (a constant) is left out of the VAE and imputed by that constant. A pandas
    DataFrame in gives a DataFrame out (same index and columns); ``set_output`` also works.

    Arguments:
        missing_values: the marker of a missing entry (NaN by default); with another marker,
            a NaN in the data is refused.
        latent_dim: dimension of the VAE's latent z.
        hidden: widths of the encoder's hidden layers (the decoder mirrors them).
        epochs: passes over the rows.
        batch_size: rows per step (at most the number of rows).
        lr: Adam learning rate.
        importance_samples: K of the MIWAE bound during training.
        validation_fraction: rows held out to pick the best epoch and stop early. 0 (the
            default) trains on every row for ``epochs``: on the benchmark's tables (a few
            hundred rows) that imputed better than holding 10 % out (docs/benchmarks.md).
        patience: with held-out rows, validations without improvement before stopping
            (0 = never).
        method: the conditioning method (``condvae.METHODS``) that answers p(z | x_o).
        method_options: keyword options of that method (None: its defaults, except
            ``particles=1000`` for ``"importance"``).
        n_draws: S, posterior draws per row for the point imputation and ``sample``'s default.
        sample_posterior: return one posterior draw per missing entry instead of the point
            imputation (multiple imputation).
        random_state: seed of the training and the draws (None: a fresh one at each fit).
        device: torch device of the VAE.
        verbose: 0 silent; 1 a progress bar while training.

    Attributes:
        vae_: the trained ``TabularVAE`` (None if every column is constant).
        columns_: the VAE's column specs (kinds and the scaler).
        modelled_: indices of the columns the VAE models (the non-constant ones).
        constants_: column index -> the constant that imputes it.
        n_features_in_, feature_names_in_: as in scikit-learn.
        train_result_: what ``condvae.train_vae`` returned.

    scikit-learn's ``check_estimator`` passes, and so do its set_output checks; the one it
    would fail, ``check_dataframe_column_names_consistency`` (not run by ``check_estimator`` in
    scikit-learn 1.9), matches scikit-learn's multi-line message, while a table whose column
    names differ from the fitted ones is refused here in one line naming ``X`` (condvae's
    convention, so the command line can print it).

    References:
        Mattei & Frellsen, "MIWAE: Deep generative modelling and imputation of incomplete data
        sets", ICML 2019, arXiv:1812.02633.
    """

    def __init__(
        self,
        *,
        missing_values: float = np.nan,
        latent_dim: int = 8,
        hidden: tuple[int, ...] = (128, 128),
        epochs: int = 400,
        batch_size: int = 64,
        lr: float = 1e-3,
        importance_samples: int = 20,
        validation_fraction: float = 0.0,
        patience: int = 60,
        method: str = "importance",
        method_options: dict[str, Any] | None = None,
        n_draws: int = 100,
        sample_posterior: bool = False,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        verbose: int = 0,
    ) -> None:
        self.missing_values = missing_values
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.importance_samples = importance_samples
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.method = method
        self.method_options = method_options
        self.n_draws = n_draws
        self.sample_posterior = sample_posterior
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # -- input -----------------------------------------------------------------------------
    def _check_params(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")

        for name in ("latent_dim", "epochs", "batch_size", "importance_samples", "n_draws"):
            positive_int(name)
        hidden = self.hidden
        if isinstance(hidden, numbers.Integral):
            hidden = (hidden,)
        if not hidden or any(
            isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1 for h in hidden
        ):
            raise CondVAEError(
                f"hidden: expected positive layer widths, e.g. (128, 128), got {self.hidden!r}"
            )
        if not 0 <= self.validation_fraction < 1:
            raise CondVAEError(
                f"validation_fraction: expected a fraction in [0, 1), got {self.validation_fraction!r}"
            )
        if not isinstance(self.patience, numbers.Integral) or self.patience < 0:
            raise CondVAEError(f"patience: expected a non-negative integer, got {self.patience!r}")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise CondVAEError(f"lr: expected a positive learning rate, got {self.lr!r}")
        if self.method not in METHODS:
            raise CondVAEError(f"method: unknown {self.method!r}; expected one of {sorted(METHODS)}")
        options = self.method_options or {}
        if not isinstance(options, dict):
            raise CondVAEError(f"method_options: expected a dict of the method's options, got {options!r}")
        unknown = sorted(set(options) - set(METHODS[self.method].options()))
        if unknown:
            raise CondVAEError(
                f"method_options: {unknown} not known to method {self.method!r} "
                f"(it takes {METHODS[self.method].options()})"
            )

    def _validate(self, X: Any, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """X as float64 ``[N, D]`` with NaN for missing, and the missing mask; checks as the
        module says. ``reset``: at fit (learn the columns) or transform (check against them)."""
        if hasattr(X, "dtypes") and hasattr(X, "columns"):  # a DataFrame: name the culprits
            import pandas as pd  # present: X is a DataFrame

            bad = [
                str(c)
                for c in X.columns
                if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
            ]
            if bad:
                raise NonNumericError(
                    f"X: non-numeric columns {', '.join(map(repr, bad))}; encode them as numbers first"
                )
            if any(isinstance(dtype, pd.api.extensions.ExtensionDtype) for dtype in X.dtypes):
                X = X.astype("float64")  # nullable dtypes: pd.NA -> NaN
        try:
            # scikit-learn checks the count and names of the columns against the fitted ones
            # (and warns when a DataFrame's names vanish or appear)
            x = validate_data(
                self, X, reset=reset, dtype=np.float64, ensure_all_finite="allow-nan", copy=True
            )
        except TypeError as exc:
            raise NonNumericError(f"X: non-numeric values ({exc})") from None
        except ValueError as exc:
            message = " ".join(str(exc).split())  # scikit-learn's messages may span lines
            if "could not convert" in message:
                raise NonNumericError(
                    f"X: non-numeric values (argument must be a string or a number: {message})"
                ) from None
            raise CondVAEError(message if message.startswith("X") else f"X: {message}") from None
        if not _is_nan_marker(self.missing_values):
            if np.isnan(x).any():
                raise CondVAEError(
                    f"X: contains NaN but missing_values={self.missing_values!r}; pass missing_values=np.nan "
                    "or replace the NaNs with the marker"
                )
            x[x == self.missing_values] = np.nan
        return x, np.isnan(x)

    # -- fit -------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> CondVAEImputer:
        """Train the VAE on the incomplete ``X`` (MIWAE); ``y`` is ignored."""
        from condvae.train import train_vae  # the training loop (tables' trainer)

        self._check_params()
        x, missing = self._validate(X, reset=True)
        n, d = x.shape
        if n < 2:
            raise CondVAEError(f"X: {n} sample; a VAE needs at least 2 rows (n_samples = {n})")
        names = [str(c) for c in getattr(self, "feature_names_in_", [f"x{j}" for j in range(d)])]
        empty = np.flatnonzero(missing.all(0))
        if empty.size:
            raise CondVAEError(
                f"X: column {names[empty[0]]!r} (index {empty[0]}) is entirely missing; nothing to learn "
                "its values from: drop it"
            )
        constants = {}
        for j in range(d):
            values = np.unique(x[~missing[:, j], j])
            if values.size == 1:
                constants[j] = float(values[0])
        self.constants_ = constants
        self.modelled_ = np.array([j for j in range(d) if j not in constants], dtype=np.int64)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.seed_ = seed
        self.vae_, self.columns_, self.train_result_ = None, [], None
        if self.modelled_.size == 0:
            return self
        data = x[:, self.modelled_]
        self.columns_ = infer_columns(data, [names[j] for j in self.modelled_])
        hidden = (self.hidden,) if isinstance(self.hidden, numbers.Integral) else tuple(self.hidden)
        # train_vae holds out a seeded ``valid_fraction`` of the rows for early stopping
        # (none below 10 rows, or with validation_fraction=0)
        self.train_result_ = train_vae(
            data,
            columns=self.columns_,
            latent_dim=int(self.latent_dim),
            hidden=[int(h) for h in hidden],
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            lr=float(self.lr),
            importance_samples=int(self.importance_samples),
            patience=int(self.patience),
            valid_fraction=float(self.validation_fraction),
            out=None,
            seed=seed,
            device=self.device,
            progress=bool(self.verbose),
        )
        self.vae_ = self.train_result_.model.eval()
        return self

    # -- transform -------------------------------------------------------------------------
    def transform(self, X: Any) -> Any:
        """``X`` with its missing entries imputed (see the class); observed entries unchanged."""
        check_is_fitted(self, "seed_")
        x, missing = self._validate(X, reset=False)
        out = x.copy()
        if self.sample_posterior:
            filled = self._draws(x, missing, 1, point=False)[0]
        else:
            filled = self._draws(x, missing, int(self.n_draws), point=True)[0]
        out[missing] = filled[missing]
        return self._wrap(out, X)

    def sample(self, X: Any, n_draws: int | None = None) -> np.ndarray:
        """``n_draws`` (default ``self.n_draws``) imputations per row, ``[n, N, D]`` float64:
        x_u ~ p(x_u | x_o) with the observed entries (and constants) in place, for intervals
        (quantiles over the first axis) or multiple imputation."""
        check_is_fitted(self, "seed_")
        n = int(self.n_draws if n_draws is None else n_draws)
        if n < 1:
            raise CondVAEError(f"n_draws: expected a positive number of draws, got {n_draws!r}")
        x, missing = self._validate(X, reset=False)
        draws = self._draws(x, missing, n, point=False)
        return np.where(missing[None], draws, x[None])

    def _draws(self, x: np.ndarray, missing: np.ndarray, n: int, point: bool) -> np.ndarray:
        """Imputations ``[n, N, D]`` in raw units (``point``: one row of point imputations,
        ``[1, N, D]``); entries not missing are left as NaN-free copies of ``x``."""
        out = np.repeat(x[None], 1 if point else n, axis=0)
        for j, value in self.constants_.items():
            out[:, missing[:, j], j] = value
        if self.vae_ is None:
            return out
        cols = self.modelled_
        rows = np.flatnonzero(missing[:, cols].any(1))  # complete rows are never conditioned
        if rows.size == 0:
            return out
        vae = self.vae_
        data = vae.to_model(x[np.ix_(rows, cols)], argument="X")
        mask = torch.from_numpy(~missing[np.ix_(rows, cols)]).to(vae.device)
        options = dict(self.method_options or {})
        if self.method == "importance":
            # 1000 particles: for latents of ~10 dimensions and the model's own partial encoder
            # as proposal, enough for stable means (the method's 5000 is for images)
            options.setdefault("particles", 1000)
        per_row = max(n, int(options.get("particles", 0)), int(options.get("samples", 0)), 1)
        chunk = max(1, _CHUNK // per_row)
        kinds = np.array([c["kind"] for c in self.columns_])
        with warnings.catch_warnings():
            # a low effective sample size is a property of single rows, reported per fit by
            # the importance method; the imputer's users see its aggregate in the benchmark
            warnings.filterwarnings("ignore", message="importance: effective sample size")
            for start in range(0, rows.size, chunk):
                part = slice(start, start + chunk)
                post = condition(vae, data[part], mask[part], method=self.method, seed=self.seed_, **options)
                with torch.no_grad():
                    p = vae.decode(post.sample(n))  # [n, b, D'] per-column predictive
                    y = p.sample()
                    if point:
                        means = p.mean.mean(0)  # gaussian means, bernoulli probabilities
                        categorical = torch.from_numpy(kinds == "categorical")
                        if categorical.any():  # the mean of unordered codes means nothing: the mode
                            means[..., categorical] = _mode(y[..., categorical])
                        y = means[None]
                    raw = vae.from_model(y).numpy()
                out[:, rows[part][:, None], cols[None, :]] = raw
        # from_model maps whole rows; put the observed entries back exactly as given
        return np.where(missing[None], out, x[None])

    def _wrap(self, out: np.ndarray, X: Any) -> Any:
        """A DataFrame for a DataFrame (its index and columns) when fitted on one, else the array
        (``set_output(transform="pandas")`` then names the columns as scikit-learn does)."""
        if hasattr(X, "columns") and hasattr(X, "index") and hasattr(self, "feature_names_in_"):
            import pandas as pd  # present: X is a DataFrame

            return pd.DataFrame(out, index=X.index, columns=X.columns)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The input's feature names: imputation keeps every column."""
        check_is_fitted(self, "n_features_in_")
        return _check_feature_names_in(self, input_features)


def _mode(draws: torch.Tensor) -> torch.Tensor:
    """The most frequent value over the first axis of integer-valued ``draws`` ``[n, ...]``."""
    codes = draws.round().long()
    top = int(codes.max()) + 1 if codes.numel() else 1
    counts = torch.nn.functional.one_hot(codes.clamp_min(0), top).sum(0)
    return counts.argmax(-1).to(draws.dtype)
