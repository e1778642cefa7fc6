"""A bounded pool of fit jobs: at most ``capacity`` queued or running, each with progress,
cancel and a time limit, run by worker threads so that the event loop never waits on a fit.

Jobs that share a ``key`` (same model, method, options and seed) and wait at the same time
are run as one batch: ``condition`` fits B queries at once for little more than the cost of
one, and query i's answer depends only on its own evidence and the seed, never on its batch
mates, so batching changes the throughput under load and nothing else. A batch whose fit
raises is rerun one job at a time, so that one bad query fails alone.

Threads, not processes: torch releases the GIL in its kernels, the models are loaded once and
shared read-only, and a fit's tensors need no pickling. Cancel and the time limit reach a fit
through ``condvae.conditioning.monitor``: the loops check between steps.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

from condvae.conditioning.monitor import Cancelled, watching
from condvae.errors import CondVAEError

Runner = Callable[[list[Any]], list[Any]]  # payloads -> one result per payload, in order
CANCELLED = "cancelled by the client"


class QueueFull(CondVAEError):
    """Every slot is taken; the client should retry later (HTTP 503)."""


@dataclass
class Job:
    id: str
    kind: str
    run: Runner
    payload: Any
    key: Hashable | None
    lane: str = "fit"
    state: str = "queued"  # queued, running, done, failed, cancelled
    phase: str = ""
    done: int = 0
    total: int = 0
    batch: int = 0  # how many jobs its fit served at once
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: str | None = None
    status: int = 200  # the HTTP status of its answer: 200, 400, 409 (cancelled), 504 (time limit)
    cancel: threading.Event = field(default_factory=threading.Event)
    future: concurrent.futures.Future[Job] = field(default_factory=concurrent.futures.Future)
    version: int = 0  # bumped at every change, so that a watcher sends only news

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
            "batch": self.batch,
            "seconds": round(now - (self.started or now), 3),
            "error": self.error,
        }


class JobQueue:
    """``submit(kind, run, payload, key, lane)`` queues a job; each lane's worker threads take
    its oldest job with up to ``max_batch - 1`` waiting jobs of the same key and call ``run`` on
    their payloads under a watch that reports progress and honours cancel and the time limit.

    ``lanes`` maps a lane's name to its number of workers: one-pass methods (``ipa``) in one
    lane, iterative fits in another, so that a minute-long fit never delays a millisecond
    answer. Iterative fits hold the GIL between their small kernels, so two fits in two
    threads run little faster than one after the other, while a batch of B queries costs little
    more than one query: one fit worker that batches serves more than several that do not."""

    def __init__(
        self,
        lanes: dict[str, int],
        capacity: int,
        time_limit: float,
        keep: int = 256,
        max_batch: int = 32,
        windows: dict[str, float] | None = None,
    ) -> None:
        self.capacity, self.time_limit, self.keep, self.max_batch = capacity, time_limit, keep, max_batch
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.pending: dict[str, deque[Job]] = {lane: deque() for lane in lanes}
        # seconds a lane's worker waits for batch mates before it starts: requests sent together
        # rarely arrive together, and a fit that takes a second loses nothing by waiting 50 ms
        self.windows = {lane: (windows or {}).get(lane, 0.0) for lane in lanes}
        self.cond = threading.Condition()  # guards the queue's state; each lane waits on its own
        self.ready = {lane: threading.Condition(self.cond) for lane in lanes}
        self.active = 0
        self.stopping = False
        self.threads = [
            threading.Thread(target=self._work, args=(lane,), daemon=True, name=f"condvae-{lane}-{i}")
            for lane, workers in lanes.items()
            for i in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def submit(
        self, kind: str, run: Runner, payload: Any, key: Hashable | None = None, lane: str = "fit"
    ) -> Job:
        with self.cond:
            if self.active >= self.capacity:
                raise QueueFull(
                    f"queue: all {self.capacity} job slots are taken (queued or running); retry shortly"
                )
            self.active += 1
            job = Job(uuid.uuid4().hex, kind, run, payload, None if key is None else (kind, key))
            self.jobs[job.id] = job
            while len(self.jobs) > self.keep:  # forget the oldest finished jobs
                oldest = next((k for k, j in self.jobs.items() if j.finished_state), None)
                if oldest is None:
                    break
                del self.jobs[oldest]
            job.lane = lane
            self.pending[lane].append(job)
            self.ready[lane].notify()
        return job

    def _take(self, lane: str) -> list[Job] | None:
        pending = self.pending[lane]
        with self.cond:
            while not pending and not self.stopping:
                self.ready[lane].wait()
            if not pending:
                return None
            batch = [pending.popleft()]
            if batch[0].key is not None and self.windows[lane] > 0:
                end = time.monotonic() + self.windows[lane]
                while (left := end - time.monotonic()) > 0 and not self.stopping:
                    self.ready[lane].wait(left)
            if batch[0].key is not None:
                mates = [j for j in pending if j.key == batch[0].key][: self.max_batch - 1]
                for job in mates:
                    pending.remove(job)
                batch += mates
            return batch

    def _work(self, lane: str) -> None:
        # One intra-op thread per worker: from a thread other than the main one, torch's
        # two-thread kernels ran a gvi fit at half the speed of one thread (measured, 2 cores).
        torch.set_num_threads(1)
        while (batch := self._take(lane)) is not None:
            live = [j for j in batch if not j.cancel.is_set()]
            for job in batch:
                if job.cancel.is_set():
                    self._finish(job, "cancelled", error=CANCELLED, status=409)
            if len(live) > 1 and not self._run(live, quiet=True):
                for job in live:  # a query of the batch made the fit raise: find which, alone
                    self._run([job])
            elif len(live) == 1:
                self._run(live)

    def _run(self, jobs: list[Job], quiet: bool = False) -> bool:
        """Run one batch; False (jobs left unfinished) where ``quiet`` and the fit raised."""
        stop, reason = threading.Event(), [CANCELLED]

        def report(phase: str, done: int, total: int) -> None:
            for job in jobs:
                job.report(phase, done, total)
            if all(job.cancel.is_set() for job in jobs):
                stop.set()

        def expire() -> None:
            reason[0] = f"time limit: the fit ran past {self.time_limit:g} s and was stopped"
            stop.set()

        timer = threading.Timer(self.time_limit, expire)
        timer.daemon = True
        for job in jobs:
            job.state, job.started, job.batch = "running", time.time(), len(jobs)
            job.version += 1
        timer.start()
        try:
            with watching(report, stop, lambda: reason[0]):
                results = jobs[0].run([job.payload for job in jobs])
            for job, result in zip(jobs, results, strict=True):
                self._finish(job, "done", result=result)
        except Cancelled:
            status = 504 if reason[0].startswith("time limit") else 409
            for job in jobs:
                self._finish(job, "cancelled", error=reason[0], status=status)
        except CondVAEError as err:
            if quiet:
                return False
            for job in jobs:
                self._finish(job, "failed", error=str(err), status=400)
        except Exception as err:  # a bug: say so in one line, keep the server up
            if quiet:
                return False
            for job in jobs:
                self._finish(job, "failed", error=f"internal error: {type(err).__name__}: {err}", status=500)
        finally:
            timer.cancel()
        return True

    def _finish(
        self, job: Job, state: str, *, result: Any = None, error: str | None = None, status: int = 200
    ) -> None:
        with self.cond:
            if job.finished_state:
                return  # cancelled while its batch ran: its result is dropped
            if job.cancel.is_set() and state == "done":
                state, error, status = "cancelled", CANCELLED, 409
            job.state, job.result, job.error, job.status = state, result, error, status
            job.finished = time.time()
            job.version += 1
            self.active -= 1
        job.future.set_result(job)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a job now: queued, it never runs; running alone, its fit stops within a step;
        running in a batch, it is answered at once and the batch goes on for the others."""
        job = self.get(job_id)
        job.cancel.set()
        if job.state == "queued":
            with self.cond:
                if job in self.pending[job.lane]:
                    self.pending[job.lane].remove(job)
            self._finish(job, "cancelled", error=CANCELLED, status=409)
        elif job.state == "running" and job.batch > 1:
            self._finish(job, "cancelled", error=CANCELLED, status=409)
        return job

    def stats(self) -> dict[str, int]:
        with self.cond:
            return {
                "active": self.active,
                "capacity": self.capacity,
                "queued": sum(len(p) for p in self.pending.values()),
            }

    def shutdown(self) -> None:
        with self.cond:
            self.stopping = True
            for ready in self.ready.values():
                ready.notify_all()
            waiting = [job for pending in self.pending.values() for job in pending]
            for pending in self.pending.values():
                pending.clear()
        for job in waiting:
            job.cancel.set()
            self._finish(job, "cancelled", error="the server is shutting down", status=503)
        for job in list(self.jobs.values()):
            job.cancel.set()
        for thread in self.threads:
            thread.join(timeout=30)
