"""Mixed precision for the decoder's forward pass: ``with condvae.mixed_precision(): ...``.

Inside the block, the decoders of the bundled model families run their layers under
``torch.autocast`` (bfloat16 by default: float32's range, so no loss scaling is needed) and
hand float32 parameters to the likelihood, so every log-density, C-ELBO and gradient that
the fits accumulate stays float32. On CUDA that is where the time goes (the decoder is 80% of a
fit step); on a CPU without bfloat16 matrix units it brings nothing. Outside the block nothing
changes. A context variable keeps concurrent threads apart.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch

from condvae.errors import CondVAEError

_DTYPE: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar(
    "condvae_decoder_dtype", default=None
)


@contextlib.contextmanager
def mixed_precision(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """Decoder forward passes in ``dtype`` (bfloat16 or float16) within the block."""
    if dtype not in (torch.bfloat16, torch.float16):
        raise CondVAEError(f"dtype: expected torch.bfloat16 or torch.float16, got {dtype!r}")
    token = _DTYPE.set(dtype)
    try:
        yield
    finally:
        _DTYPE.reset(token)


def decoder_forward(
    fn: Callable[..., torch.Tensor], device: torch.device, *args: torch.Tensor
) -> torch.Tensor:
    """``fn(*args)`` (a decoder's layers), under autocast inside ``mixed_precision``, as float32."""
    dtype = _DTYPE.get()
    if dtype is None:
        return fn(*args)
    if device.type == "cpu" and dtype is torch.float16:
        raise CondVAEError("dtype: float16 autocast is for CUDA; use torch.bfloat16 on the CPU")
    if not torch.amp.is_autocast_available(device.type):
        raise CondVAEError(
            f"mixed_precision: torch has no autocast for {device.type} devices; leave the block "
            "to run this model in float32"
        )
    with torch.autocast(device_type=device.type, dtype=dtype):
        out = fn(*args)
    return out.float()
