"""A second device for device-placement tests on machines without a GPU.

Inside ``virtual_device()`` every tensor created on, or moved to, the device it yields is a
``Remote``: a tensor that reports that device (the Lazy device type, which PyTorch's CPU build
can place tensors on) while its values live in an ordinary CPU tensor, so every kernel is the
CPU's own and results are exactly the CPU's. A ``TorchDispatchMode`` sees every operation and
raises what CUDA raises when code mixes devices: a CPU tensor (other than a 0-d scalar) next to
a device tensor, a CPU generator drawing device tensors, ``numpy()`` of a device tensor. So
code that hard-codes the CPU fails here as it would on a GPU, and anything returned can be
checked to be on the device. What it cannot show is speed, or CUDA-only paths (autocast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("lazy", 0)

# Operations CUDA allows across devices: copies between them, and CPU index tensors.
MIXED_OK = {
    torch.ops.aten.copy_.default,
    torch.ops.aten._to_copy.default,
    torch.ops.aten.index.Tensor,
    torch.ops.aten.index_put_.default,
    torch.ops.aten.index_put.default,
    torch.ops.aten._index_put_impl_.default,
}


class Remote(torch.Tensor):
    """A tensor on ``DEVICE`` whose values are the CPU tensor ``data_``."""

    data_: torch.Tensor

    @staticmethod
    def __new__(cls, data: torch.Tensor) -> Remote:
        out = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls,
            data.shape,
            strides=data.stride(),
            storage_offset=data.storage_offset(),
            dtype=data.dtype,
            layout=data.layout,
            device=DEVICE,
            requires_grad=data.requires_grad,
        )
        out.data_ = data
        return out

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return f"Remote({self.data_!r}, device={DEVICE})"

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.tolist:  # CUDA copies to the host; the C++ method refuses subclasses
            return args[0].data_.tolist()
        if func is torch.Tensor.__format__:  # f"{t:.3f}" of a 0-d tensor reads its value, as on CUDA
            return args[0].data_.__format__(*args[1:])
        if func is torch.Tensor.numpy:
            raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() first.")
        return torch._C._disabled_torch_function_impl(func, types, args, kwargs or {})

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        raise RuntimeError(f"{func}: a {DEVICE} tensor used outside virtual_device()")


# Operations that bring a device value to the host (a copy to the CPU, ``item()``, ``bool()``).
HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}
COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}

# Constructors from Python data that allocate on the target device without dispatching.
FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


def _on_device(value: object) -> bool:
    return value is not None and torch.device(value).type == DEVICE.type  # type: ignore[arg-type]


class _Constructors(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in FROM_DATA and _on_device(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
            return func(*args, **kwargs).to(DEVICE)
        return func(*args, **kwargs)


class _Mode(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0  # reads of device values on the host: each one stalls a GPU's queue

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        remote = any(isinstance(t, Remote) for t in tensors)
        target = remote
        if "device" in kwargs and kwargs["device"] is not None:
            target = _on_device(kwargs["device"])
            if target:
                kwargs["device"] = torch.device("cpu")
        if remote and func not in MIXED_OK:
            for t in tensors:
                if not isinstance(t, Remote) and not (t.device.type == "cpu" and t.dim() == 0):
                    raise RuntimeError(
                        f"{func}: expected all tensors to be on the same device, but found at least two "
                        f"devices, {DEVICE} and {t.device}! (a {list(t.shape)} {t.dtype} tensor)"
                    )
        generator = kwargs.get("generator")
        if target and generator is not None and generator.device.type == "cpu":
            raise RuntimeError(
                f"{func}: expected a '{DEVICE.type}' device type for generator but found 'cpu'"
            )
        if remote and (func in HOST_READS or (func in COPIES and not target)):
            self.syncs += 1
        inputs = {id(t.data_): t for t in tensors if isinstance(t, Remote)}
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if not target:
            return out
        return tree_map(lambda t: _wrap(t, inputs), out)


def _unwrap(value: object) -> object:
    return value.data_ if isinstance(value, Remote) else value


def _wrap(value: object, inputs: dict[int, Remote]) -> object:
    if not isinstance(value, torch.Tensor) or isinstance(value, Remote):
        return value
    same = inputs.get(id(value))  # in-place ops return their own input
    return same if same is not None else Remote(value)


class Device:
    """What ``virtual_device()`` yields: the ``device`` and a count of host ``syncs`` so far."""

    def __init__(self, mode: _Mode) -> None:
        self.device, self._mode = DEVICE, mode

    @property
    def syncs(self) -> int:
        return self._mode.syncs


@contextlib.contextmanager
def virtual_device() -> Iterator[torch.device]:
    """Within the block, ``DEVICE`` behaves as a second device; yields it."""
    with counting_syncs() as virtual:
        yield virtual.device


@contextlib.contextmanager
def counting_syncs() -> Iterator[Device]:
    """``virtual_device()`` that also counts how often a device value is read on the host."""
    mode = _Mode()
    with _Constructors(), mode:
        yield Device(mode)
