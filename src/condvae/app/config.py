"""What one ``condvae serve`` allows: which models, how big a request, how many fits at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from condvae.errors import CondVAEError


@dataclass(frozen=True)
class ServeConfig:
    """Limits of a server. ``models``: the names a client may use (bundled VAEs; empty = every
    bundled VAE). ``workers`` fits run at once; at most ``queue`` jobs wait or run, beyond which a
    request gets 503. ``time_limit`` seconds per fit, after which it is stopped."""

    models: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    max_image_side: int = 2048
    workers: int = 1  # iterative fits at once (gvi, hmc, ...); waiting ones of one kind are batched
    fast_workers: int = 1  # one-pass methods at once (ipa, importance, grid), apart from the fits
    queue: int = 16
    time_limit: float = 120.0
    max_completions: int = 64
    max_design_completions: int = 64
    keep_jobs: int = 256
    max_batch: int = 32  # waiting jobs of one model, method, options and seed fitted together
    batch_window: float = 0.05  # seconds an iterative fit waits for batch mates before it starts
    data_dir: str | None = None
    device: str = "cpu"  # where the models run (cpu, cuda, cuda:N)
    preload: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # name -> pretrained directory, set by the operator

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_image_side",
            "workers",
            "fast_workers",
            "queue",
            "max_completions",
            "keep_jobs",
            "max_batch",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CondVAEError(f"{name}: expected a positive integer, got {value!r}")
        if not (isinstance(self.time_limit, int | float) and self.time_limit > 0):
            raise CondVAEError(f"time_limit: expected a positive number of seconds, got {self.time_limit!r}")
        if not (isinstance(self.batch_window, int | float) and 0 <= self.batch_window <= 10):
            raise CondVAEError(f"batch_window: expected 0 to 10 seconds, got {self.batch_window!r}")
        if self.queue < self.workers + self.fast_workers:
            total = self.workers + self.fast_workers
            raise CondVAEError(f"queue: {self.queue} is smaller than workers + fast_workers ({total})")
