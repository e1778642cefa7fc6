"""Method registry: a new conditioning method is one file with ``@register("name")``."""

from __future__ import annotations

from collections.abc import Callable

from condvae.conditioning.base import Posterior

METHODS: dict[str, type[Posterior]] = {}


def register(name: str) -> Callable[[type[Posterior]], type[Posterior]]:
    def add(cls: type[Posterior]) -> type[Posterior]:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return add
