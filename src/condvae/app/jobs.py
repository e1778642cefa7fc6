"""A bounded pool of fit jobs: at most ``capacity`` queued or running, each with progress,
cancel and a time limit, run in worker threads so the event loop never waits on a fit.

Threads, not processes: torch releases the GIL in its kernels, the models are loaded once and
shared read-only, and a fit's tensors need no pickling. Cancel and the time limit reach a fit
through ``condvae.conditioning.monitor``: the loops check between steps.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from condvae.conditioning.monitor import Cancelled, watching
from condvae.errors import CondVAEError


class QueueFull(CondVAEError):
    """Every slot is taken; the client should retry later (HTTP 503)."""


@dataclass
class Job:
    id: str
    kind: str
    time_limit: float
    state: str = "queued"  # queued, running, done, failed, cancelled
    phase: str = ""
    done: int = 0
    total: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: str | None = None
    status: int = 200  # the HTTP status its answer carries: 200, 400 (bad request), 504 (time limit)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "cancelled by the client"
    future: concurrent.futures.Future[Any] | None = None
    version: int = 0  # bumped at every change, so a watcher sends only news

    @property
    def finished_state(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def report(self, phase: str, done: int, total: int) -> None:
        self.phase, self.done, self.total = phase, done, total
        self.version += 1

    def summary(self) -> dict[str, Any]:
        """The job's state as JSON (without its result)."""
        now = self.finished or time.time()
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "fraction": round(self.done / self.total, 4) if self.total else None,
            "seconds": round(now - (self.started or now), 3),
            "error": self.error,
        }


class JobQueue:
    """``submit(kind, fn)`` runs ``fn()`` in a worker thread under a watch that reports progress
    and honours cancel; ``QueueFull`` when ``capacity`` jobs are already queued or running."""

    def __init__(self, workers: int, capacity: int, time_limit: float, keep: int = 256) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="condvae-fit")
        self.capacity, self.time_limit, self.keep = capacity, time_limit, keep
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()
        self.active = 0

    def submit(self, kind: str, fn: Callable[[], Any]) -> Job:
        with self.lock:
            if self.active >= self.capacity:
                raise QueueFull(
                    f"queue: all {self.capacity} job slots are taken (queued or running); retry shortly"
                )
            self.active += 1
            job = Job(uuid.uuid4().hex, kind, self.time_limit)
            self.jobs[job.id] = job
            while len(self.jobs) > self.keep:  # forget the oldest finished jobs
                oldest = next((k for k, j in self.jobs.items() if j.finished_state), None)
                if oldest is None:
                    break
                del self.jobs[oldest]
        job.future = self.pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn: Callable[[], Any]) -> Any:
        timer = threading.Timer(job.time_limit, self._expire, (job,))
        timer.daemon = True
        try:
            if job.cancel.is_set():
                raise Cancelled(job.cancel_reason)
            job.state, job.started = "running", time.time()
            job.version += 1
            timer.start()
            with watching(job.report, job.cancel, lambda: job.cancel_reason):
                job.result = fn()
            job.state = "done"
        except Cancelled as err:
            job.state, job.error = "cancelled", str(err)
            job.status = 504 if "time limit" in str(err) else 409
        except CondVAEError as err:
            job.state, job.error, job.status = "failed", str(err), 400
        except Exception as err:  # a bug: say so in one line, keep the server up
            job.state, job.error, job.status = "failed", f"internal error: {type(err).__name__}: {err}", 500
        finally:
            timer.cancel()
            job.finished = time.time()
            job.version += 1
            with self.lock:
                self.active -= 1
        return job

    def _expire(self, job: Job) -> None:
        job.cancel_reason = f"time limit: the fit ran past {job.time_limit:g} s and was stopped"
        job.cancel.set()

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.finished_state:
            job.cancel.set()
        return job

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"active": self.active, "capacity": self.capacity, "known": len(self.jobs)}

    def shutdown(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
