"""Progress and cancellation of a running fit, for callers that watch it (the app, a notebook).

The fit loops call ``tick(done, total, phase)`` once per optimisation step, temperature or
transition. Outside ``watching`` that is one context-variable lookup; inside, it reports the
fraction done and raises ``Cancelled`` as soon as the caller's ``cancel`` event is set, so that
a long fit stops within one step instead of running to its end. A context variable (not a
global) keeps concurrent fits in different threads apart.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from condvae.errors import CondVAEError


class Cancelled(CondVAEError):
    """The fit was stopped by its caller (``reason`` says why: a user's cancel, a time limit)."""


@dataclass
class Watch:
    report: Callable[[str, int, int], None] | None
    cancel: threading.Event
    reason: Callable[[], str]


_WATCH: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("condvae_watch", default=None)


@contextlib.contextmanager
def watching(
    report: Callable[[str, int, int], None] | None = None,
    cancel: threading.Event | None = None,
    reason: Callable[[], str] = lambda: "cancelled",
) -> Iterator[threading.Event]:
    """Within the block, fits call ``report(phase, done, total)`` and stop with ``Cancelled``
    (message ``reason()``) once ``cancel`` is set. Yields the cancel event."""
    event = cancel if cancel is not None else threading.Event()
    token = _WATCH.set(Watch(report, event, reason))
    try:
        yield event
    finally:
        _WATCH.reset(token)


def tick(done: int, total: int, phase: str) -> None:
    """One unit of a fit's work is done: report it and honour a cancel request."""
    watch = _WATCH.get()
    if watch is None:
        return
    if watch.cancel.is_set():
        raise Cancelled(watch.reason())
    if watch.report is not None:
        watch.report(phase, done, total)


__all__ = ["Cancelled", "tick", "watching"]
