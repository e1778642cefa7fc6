"""Tables: feature vectors with per-column types and NaN for missing values.

A table is a float64 array ``[N, D]`` in raw units (NaN = missing) with its column names. Three
small tables ship with scikit-learn (no network) and have fixed seeded splits:

| name            | rows x columns | target                      |
| --------------- | -------------- | --------------------------- |
| ``breast_cancer`` | 569 x 30     | class (0 malignant, 1 benign) |
| ``diabetes``      | 442 x 10     | continuous (disease progression), raw units |
| ``wine``          | 178 x 13     | class (0, 1, 2)             |

A name with ``+target`` appended (``diabetes+target``) is the table with its target as a last
column named ``"target"`` (what the bundled table models are trained on, so conditioning on the
features predicts the target). ``csv:PATH`` reads any CSV with a header row (empty cells,
``NA``, ``NaN``, ``?`` = missing).

Splits: the rows are permuted by ``numpy.random.default_rng(0).permutation(N)``; the first
``round(0.15 N)`` are the test split, the next ``round(0.15 N)`` the validation split and the
rest (about 70 %) the training split, each kept in the original row order. ``split="all"`` is
every row.

Column types (``infer_columns``): a column with exactly two distinct observed values is
``bernoulli`` (the smaller value is 0, the larger 1), one with 3 to ``max_categories`` distinct
non-negative integer values is ``categorical`` (the sorted values are the codes 0..K-1), and any
other is ``gaussian`` (standardised by the mean and standard deviation of its observed values).
A column with no observed value, or with a single distinct value (a constant: it carries no
information and has no scale), is refused in one line naming it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condvae.errors import DataError

# name -> (scikit-learn loader, its keyword arguments, target kind)
TABLES: dict[str, tuple[str, dict[str, Any], str]] = {
    "breast_cancer": ("load_breast_cancer", {}, "class"),
    "diabetes": ("load_diabetes", {"scaled": False}, "continuous"),
    "wine": ("load_wine", {}, "class"),
}
SPLITS = ("train", "valid", "test", "all")
SPLIT_SEED = 0
HELD_OUT = 0.15  # the test and the validation fractions
MISSING_TOKENS = {"", "na", "nan", "n/a", "null", "none", "?"}


@dataclass
class Table:
    """A table in raw units: ``x`` float64 ``[N, D]`` (NaN = missing), its column names, the
    target (``None`` if the table has none), the table's name and the split."""

    x: np.ndarray
    columns: list[str]
    target: np.ndarray | None
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.x.shape[0])


def is_table_name(name: object) -> bool:
    """A bundled table's name (optionally ``+target``) or ``csv:PATH``."""
    return isinstance(name, str) and (name.removesuffix("+target") in TABLES or name.startswith("csv:"))


def split_rows(n: int, split: str, seed: int = SPLIT_SEED) -> np.ndarray:
    """The row indices of ``split`` of a table of ``n`` rows (see the module docstring)."""
    if split not in SPLITS:
        raise DataError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    n_held = round(HELD_OUT * n)
    parts = {"test": perm[:n_held], "valid": perm[n_held : 2 * n_held], "train": perm[2 * n_held :]}
    return np.sort(parts[split])


def load_table(name: str, split: str = "train", with_target: bool = False) -> Table:
    """A bundled table (``breast_cancer``, ``diabetes``, ``wine``) or ``csv:PATH``, one split.

    ``with_target=True`` appends the target as a last column named ``"target"`` (so a model of
    the table can predict it by conditioning).
    """
    if not isinstance(name, str):
        raise DataError(f"name: expected a table name or csv:PATH, got {type(name).__name__}")
    if name.endswith("+target") and name[: -len("+target")] in TABLES:
        name, with_target = name[: -len("+target")], True
    if name.startswith("csv:"):
        x, columns = read_csv(name[4:])
        target = None
    elif name in TABLES:
        import sklearn.datasets  # lazily: only tables need scikit-learn

        loader, kwargs, _ = TABLES[name]
        bunch = getattr(sklearn.datasets, loader)(**kwargs)
        x = np.asarray(bunch.data, dtype=np.float64)
        columns = [str(c) for c in bunch.feature_names]
        target = np.asarray(bunch.target, dtype=np.float64)
    else:
        raise DataError(f"name: unknown table {name!r}; expected one of {sorted(TABLES)} or csv:PATH")
    rows = split_rows(len(x), split)
    x = x[rows]
    target = None if target is None else target[rows]
    if with_target:
        if target is None:
            raise DataError(f"with_target: the table {name!r} has no target")
        x, columns = np.concatenate([x, target[:, None]], axis=1), [*columns, "target"]
    return Table(
        x=x, columns=columns, target=target, name=name + ("+target" if with_target else ""), split=split
    )


def read_csv(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """A numeric CSV with a header row: float64 ``[N, D]`` (missing cells NaN) and the names."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise DataError(f"name: cannot read the CSV file {str(path)!r} ({exc.strerror})") from None
    if len(rows) < 2:
        raise DataError(f"name: {str(path)!r} needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    bad_rows = [i + 2 for i, row in enumerate(body) if len(row) != len(header)]
    if bad_rows:
        raise DataError(
            f"name: {str(path)!r} line {bad_rows[0]} has a different number of cells than the header"
        )
    x = np.empty((len(body), len(header)))
    bad: list[str] = []
    for j, column in enumerate(header):
        for i, row in enumerate(body):
            cell = row[j].strip()
            if cell.lower() in MISSING_TOKENS:
                x[i, j] = np.nan
                continue
            try:
                x[i, j] = float(cell)
            except ValueError:
                bad.append(column)
                break
    if bad:
        raise DataError(f"name: {str(path)!r} has non-numeric columns: {', '.join(map(repr, bad))}")
    return as_array(x, argument="name")[0], header


def _is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "dtypes") and hasattr(data, "columns")


def as_array(data: Any, missing_values: Any = np.nan, argument: str = "X") -> tuple[np.ndarray, list[str]]:
    """``data`` as float64 ``[N, D]`` with NaN for missing values, and its column names.

    Takes a :class:`Table`, a numpy array, a pandas DataFrame (its column names; nullable
    dtypes' ``pd.NA`` becomes NaN), a torch tensor or nested lists (``None`` = missing); other
    columns are named ``x0`` .. ``x{D-1}``. Entries equal to ``missing_values`` become NaN.
    Refused in one line naming ``argument``: non-numeric columns (named), infinities, anything
    not 2-d, an empty table.
    """
    if isinstance(data, Table):
        x, names = np.array(data.x, dtype=np.float64), list(data.columns)
    elif _is_dataframe(data):
        import pandas as pd  # present: the data is a DataFrame

        names = [str(c) for c in data.columns]
        bad = [
            n
            for n, c in zip(names, data.columns, strict=True)
            if not (pd.api.types.is_numeric_dtype(data[c]) or pd.api.types.is_bool_dtype(data[c]))
        ]
        if bad:
            raise DataError(
                f"{argument}: non-numeric columns {', '.join(map(repr, bad))}; encode them as numbers first"
            )
        x = data.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        if type(data).__module__.startswith("torch"):
            data = data.detach().cpu().double().numpy()
        try:
            x = np.array(data, dtype=np.float64)
        except (TypeError, ValueError):
            x = None
        if x is None:  # find the culprits for the message
            raw = np.array(data, dtype=object)
            if raw.ndim != 2:
                raise DataError(
                    f"{argument}: expected a 2-d table [N, D] of numbers, got ragged or mixed data"
                )
            bad = [f"x{j}" for j in range(raw.shape[1]) if not _numeric(raw[:, j])]
            raise DataError(f"{argument}: non-numeric columns {', '.join(map(repr, bad))}")
        names = []
    if x.ndim != 2:
        raise DataError(f"{argument}: expected a 2-d table [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{argument}: the table is empty (shape {tuple(x.shape)})")
    names = names or [f"x{j}" for j in range(x.shape[1])]
    if not (isinstance(missing_values, float) and math.isnan(missing_values)):
        x[x == missing_values] = np.nan
    if np.isinf(x).any():
        column = names[int(np.isinf(x).any(0).nonzero()[0][0])]
        raise DataError(f"{argument}: column {column!r} has infinite values")
    return x, names


def _numeric(values: np.ndarray) -> bool:
    try:
        np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def infer_columns(
    x: np.ndarray, names: list[str] | None = None, max_categories: int = 10
) -> list[dict[str, Any]]:
    """One spec per column: ``{"name", "kind", ...}`` with what maps raw values to model space.

    - ``gaussian``:    ``loc``, ``scale`` (mean and standard deviation of the observed values);
                       model value (x - loc) / scale.
    - ``bernoulli``:   ``values`` [a, b], a < b, the two observed values; model value 0 or 1.
    - ``categorical``: ``values`` [v_0, ..., v_{K-1}] sorted, 3 <= K <= ``max_categories``
                       non-negative integers; model value the code k.

    A column with no observed value, or a single distinct value, is refused naming it.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"x: expected a 2-d table [N, D], got shape {tuple(x.shape)}")
    names = list(names) if names is not None else [f"x{j}" for j in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise DataError(f"names: {len(names)} names for {x.shape[1]} columns")
    specs: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        observed = x[:, j][~np.isnan(x[:, j])]
        if observed.size == 0:
            raise DataError(f"X: column {name!r} is entirely missing; drop it")
        values = np.unique(observed)
        if values.size == 1:
            raise DataError(f"X: column {name!r} is constant ({values[0]:g}); drop it")
        integers = bool(np.all(values == np.round(values)) and values.min() >= 0)
        if values.size == 2:
            specs.append({"name": name, "kind": "bernoulli", "values": [float(v) for v in values]})
        elif integers and values.size <= max_categories:
            specs.append({"name": name, "kind": "categorical", "values": [float(v) for v in values]})
        else:
            loc, scale = float(observed.mean()), float(observed.std())
            specs.append({"name": name, "kind": "gaussian", "loc": loc, "scale": scale})
    return specs
