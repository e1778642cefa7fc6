"""Saving a user's model by reference to its code, never by pickle.

A wrapped model's ``config.json`` names an importable ``"package.module:factory"``, a callable
returning the user's ``nn.Module``, and the attribute paths of its decoder and encoder inside
that module. These helpers import the factory (only from ``sys.path``: never a file path), build
the module and find a bound method's attribute path so that it can be found again after loading.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from condvae.errors import CondVAEError

_SOURCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_factory(source: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:qualified.name"``, imported like any module.

    Only modules importable from ``sys.path`` are reachable: no file path is accepted.
    """
    if not isinstance(source, str) or not _SOURCE.fullmatch(source):
        raise CondVAEError(
            f"source: expected 'package.module:factory' (an importable callable returning your "
            f"nn.Module), got {source!r}"
        )
    module_name, qualname = source.split(":")
    if module_name == "__main__":  # the running script: another process could not import it
        raise CondVAEError(
            f"source: {source!r} names the running script; move the factory into a module that "
            "can be imported (e.g. my_vae.py beside it) and pass 'my_vae:VAE'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CondVAEError(
            f"source: cannot import {module_name!r} ({exc}); a wrapped model is loaded by importing "
            "its factory, so install its package or put it on sys.path"
        ) from None
    except Exception as exc:  # the user's module failed while importing: report it in one line
        raise CondVAEError(f"source: importing {module_name!r} failed ({first_line(exc)})") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise CondVAEError(f"source: {module_name!r} has no attribute {qualname!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CondVAEError(f"source: {source!r} is a {type(obj).__name__}, expected a callable")
    return obj


def source_origin(source: str) -> Path | None:
    """The file the module of ``source`` would be imported from (None if not found), without
    running it when it is a top-level module (a dotted name imports its parent packages)."""
    name = source.split(":", 1)[0]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).resolve() if spec is not None and spec.origin else None


def build_source(source: str, source_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``factory(**source_kwargs)`` for ``source = "package.module:factory"``; must be an nn.Module."""
    factory = import_factory(source)
    try:
        module = factory(**(source_kwargs or {}))
    except Exception as exc:
        raise CondVAEError(
            f"source: {source}(**{source_kwargs or {}}) failed ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(module, nn.Module):
        raise CondVAEError(f"source: {source!r} returned a {type(module).__name__}, expected an nn.Module")
    return module


def resolve_path(root: Any, path: str) -> Any:
    """``root.a.b`` for ``path = "a.b"``; ``root`` itself for ``""``."""
    obj = root
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def module_path(root: nn.Module, module: nn.Module) -> str | None:
    return next((name for name, m in root.named_modules() if m is module), None)


def owner_of(part: Any) -> nn.Module | None:
    """The module a decoder/encoder belongs to: itself, or the module of a bound method."""
    if isinstance(part, nn.Module):
        return part
    if isinstance(part, types.MethodType) and isinstance(part.__self__, nn.Module):
        return part.__self__
    return None


def locate(part: Any, root: nn.Module | None) -> str | None:
    """The attribute path of ``part`` inside ``root`` ("" for root itself), or None."""
    owner = owner_of(part)
    if root is None or owner is None:
        return None
    base = module_path(root, owner)
    if base is None:
        return None
    if part is owner:
        return base
    name = part.__func__.__name__
    found = getattr(owner, name, None)
    if getattr(found, "__func__", None) is not part.__func__:
        return None  # an aliased or decorated method: no attribute of that name gives it back
    return f"{base}.{name}" if base else name


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
