"""The browser app and its JSON API: ``condvae serve`` (FastAPI + uvicorn, assets in the package).

Layers: ``bank`` (models loaded once), ``service`` (a request -> the library's tensors -> a JSON
answer), ``jobs`` (a bounded worker pool with progress and cancel), ``server`` (the routes).
FastAPI is imported only here, so the library itself does not need it.
"""

from condvae.app.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> object:
    if name in ("create_app", "serve"):
        from condvae.app import server

        return getattr(server, name)
    raise AttributeError(f"module 'condvae.app' has no attribute {name!r}")
