"""Checks at the boundary, made before any compute: devices, counts, output paths and memory.

Every public entry point (the CLI, ``condition``, ``Posterior.sample``, ``load``) runs its
arguments through these, so a mistake costs a one-line :class:`~condvae.errors.CondVAEError`
naming the argument, never a traceback from inside torch after minutes of work, and a request
too large for the machine is refused with its estimated size instead of waking the kernel's
out-of-memory killer.

The memory limit is ``$CONDVAE_MEMORY_LIMIT`` (bytes, or ``"4GB"``, ``"512MiB"``) or
:func:`set_memory_limit`; by default half of the machine's physical memory.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from condvae.errors import CondVAEError, MemoryLimitError

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_limit: int | None = None


def parse_bytes(text: str | int, argument: str = "memory limit") -> int:
    """``"4GB"``, ``"512MiB"``, ``"1e9"`` or an int -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, scale = float(text), 1
    else:
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kmgtKMGT]i?)?[bB]?\s*", str(text))
        try:
            value = float(match.group(1)) if match else float("nan")
        except ValueError:
            value = float("nan")
        unit = (match.group(2) or "").lower() if match else ""
        scale = _BINARY.get(unit) or _UNITS[unit[:1]]
    if not value > 0 or value == float("inf"):
        raise CondVAEError(f"{argument}: expected a positive size such as 4GB or 512MiB, got {text!r}")
    return int(value * scale)


def physical_memory() -> int:
    """The machine's physical memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def memory_limit() -> int:
    """The largest single request condvae lets through, in bytes."""
    if _limit is not None:
        return _limit
    env = os.environ.get("CONDVAE_MEMORY_LIMIT")
    if env:
        return parse_bytes(env, "CONDVAE_MEMORY_LIMIT")
    return physical_memory() // 2 or 8 * 2**30


def set_memory_limit(limit: int | str | None) -> None:
    """Set the memory limit (bytes or ``"4GB"``); ``None`` restores the default."""
    global _limit
    _limit = None if limit is None else parse_bytes(limit, "limit")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_memory(nbytes: float, argument: str, what: str) -> None:
    """Refuse a request whose estimated peak memory ``nbytes`` exceeds :func:`memory_limit`."""
    limit = memory_limit()
    if nbytes > limit:
        raise MemoryLimitError(
            f"{argument}: {what} needs about {format_bytes(nbytes)}, over the memory limit of "
            f"{format_bytes(limit)}; lower {argument} (or raise the limit: $CONDVAE_MEMORY_LIMIT "
            "or condvae.set_memory_limit)"
        )


def check_count(value: object, argument: str, low: int = 1, what: str = "number") -> int:
    """An integer at least ``low`` (bools and floats refused: ``sample(1.5)`` is a mistake)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CondVAEError(f"{argument}: expected an integer >= {low}, got {value!r}")
    if value < low:
        kind = "positive" if low == 1 else f">= {low}"
        raise CondVAEError(f"{argument}: expected a {kind} {what}, got {value}")
    return value


def check_device(device: object, argument: str = "device") -> torch.device:
    """A device that exists on this machine and holds data (``meta`` does not)."""
    try:
        dev = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError):
        raise CondVAEError(
            f"{argument}: expected a torch device such as cpu or cuda:0, got {device!r}"
        ) from None
    if dev.type == "meta":
        raise CondVAEError(f"{argument}: meta tensors hold no values; expected cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CondVAEError(
                f"{argument}: {str(dev)!r} is not available here (torch {torch.__version__} "
                "without CUDA or no GPU visible); use cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CondVAEError(
                f"{argument}: {str(dev)!r} does not exist; {torch.cuda.device_count()} GPU(s) here"
            )
    elif dev.type != "cpu":
        try:
            torch.empty(1, device=dev)
        except (RuntimeError, AssertionError):
            raise CondVAEError(f"{argument}: {str(dev)!r} is not available here; use cpu") from None
    return dev


def _writable_folder(folder: Path, argument: str) -> None:
    """``folder`` (or its nearest existing ancestor, where the folders would be made) accepts files."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CondVAEError(f"{argument}: {str(existing)!r} is a file, not a folder")
    try:  # the only test that also holds for read-only mounts and root
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".condvae-probe-"):
            pass
    except OSError as exc:
        raise CondVAEError(f"{argument}: cannot write in {str(existing)!r} ({exc.strerror or exc})") from None


PICTURES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def check_output_file(path: str | Path, argument: str = "out", suffixes: tuple[str, ...] = PICTURES) -> Path:
    """The file the work will be written to, checked before the work: a name without a suffix
    gets ``suffixes[0]``; a folder, a foreign format or an unwritable place is refused."""
    out = Path(path).expanduser()
    if str(path).strip() == "" or out.is_dir():
        raise CondVAEError(
            f"{argument}: {str(path)!r} is a folder; expected a file name such as "
            f"{out / ('result' + suffixes[0])}"
        )
    if out.suffix == "":
        out = out.with_name(out.name + suffixes[0])
    if out.suffix.lower() not in suffixes:
        raise CondVAEError(
            f"{argument}: {out.suffix!r} is not a supported format; expected one of {', '.join(suffixes)}"
        )
    if out.exists() and not os.access(out, os.W_OK):
        raise CondVAEError(f"{argument}: {str(out)!r} exists and is read-only")
    _writable_folder(out.parent, argument)
    return out


def check_output_folder(path: str | Path, argument: str = "out") -> Path:
    """A folder the work will write into, checked before the work."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise CondVAEError(f"{argument}: {str(path)!r} is a file; expected a folder")
    _writable_folder(out, argument)
    return out
