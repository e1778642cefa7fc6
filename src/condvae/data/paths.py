"""Where the datasets live: an explicit argument, else ``$CONDVAE_DATA``, else a few defaults."""

from __future__ import annotations

import os
from pathlib import Path

from condvae.errors import DataError

ENV_VAR = "CONDVAE_DATA"


def cache_dir() -> Path:
    """The download cache (``$XDG_CACHE_HOME/condvae/data``, default ``~/.cache/condvae/data``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "condvae" / "data"


def _default_candidates() -> list[Path]:
    here = Path(__file__).resolve()
    # A source checkout sits beside ../shared/data (the project's layout); the cwd variants
    # cover running from the repository root or from a sibling folder.
    repo_root = here.parents[3]
    return [
        Path.cwd() / "data",
        Path.cwd().parent / "shared" / "data",
        repo_root.parent / "shared" / "data",
        cache_dir(),
    ]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the dataset root: ``data_dir`` if given, else ``$CONDVAE_DATA``, else a default.

    Raises :class:`DataError` naming ``data_dir`` when nothing usable is found.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"data_dir: {str(path)!r} is not a directory")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"data_dir: ${ENV_VAR}={env!r} is not a directory")
        return path
    candidates = _default_candidates()
    for path in candidates:
        if path.is_dir() and any(path.iterdir()):
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DataError(
        f"data_dir: no dataset folder found; pass data_dir (--data-dir) or set ${ENV_VAR} "
        f"(looked in: {looked})"
    )
