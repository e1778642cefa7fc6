"""User-facing errors.

Every mistake a user can make (a wrong path, shape, name or value) is raised as a
:class:`CondVAEError` whose message is one line naming the argument and what was expected.
The CLI prints that line and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations


class CondVAEError(ValueError):
    """A bad argument or input; the message names the argument and what was expected."""


class DataError(CondVAEError):
    """A dataset could not be found or read."""


class CheckpointError(CondVAEError):
    """A checkpoint or pretrained directory is missing, corrupt, truncated or mismatched."""


class ConditioningWarning(UserWarning):
    """A conditioning fit that ran but whose answer may not be trusted (e.g. a low effective
    sample size); the message names the queries and what to do instead."""


class MemoryLimitError(CondVAEError):
    """A request whose estimated memory exceeds the limit (``condvae.guards.memory_limit``); the
    message gives the estimate, the limit and the argument to lower."""
