"""Load-generating processes: started once per run (spawned, so no gRPC state is forked),
each running one job at a time on its own asyncio (uvloop) event loop."""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import queue
import signal
import time
import traceback
from collections.abc import Sequence
from multiprocessing.queues import Queue
from types import TracebackType
from typing import Any, Self

import uvloop

from .jobs import BatchJob, Job, JobResult, OpenLoopJob, PairsJob, RawJob, SeedJob, WarmJob
from .storage import BenchError

_IDLE_LIMIT_SECONDS = 1800.0  # a process whose parent went silent this long exits


async def _execute(job: Job) -> JobResult:
    from . import grpc_load, raw, seed

    match job:
        case PairsJob():
            return await grpc_load.run_pairs(job)
        case BatchJob():
            return await grpc_load.run_batches(job)
        case OpenLoopJob():
            return await grpc_load.run_open_loop(job)
        case WarmJob():
            return await grpc_load.run_warm(job)
        case RawJob():
            return await raw.run_raw(job)
        case SeedJob():
            return await seed.run_seed(job)


def _serve(index: int, inbox: Queue[Job | None], outbox: Queue[tuple[int, Any]]) -> None:
    # Ctrl-C in the terminal reaches this process too; obol stops it in order instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for _ in range(1_000_000):
        try:
            job = inbox.get(timeout=_IDLE_LIMIT_SECONDS)
        except queue.Empty:
            return
        if job is None:
            return
        try:
            outbox.put((index, uvloop.run(_execute(job))))
        except BaseException:
            outbox.put((index, traceback.format_exc()))


class LoadPool:
    """`size` processes; `run(jobs)` gives job i to process i and waits for all results."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = size
        self._outbox: Queue[tuple[int, Any]] = context.Queue()
        self._inboxes: list[Queue[Job | None]] = [context.Queue() for _ in range(size)]
        self._processes: list[multiprocessing.process.BaseProcess] = [
            context.Process(
                target=_serve,
                args=(i, self._inboxes[i], self._outbox),
                name=f"obol-bench-load-{i}",
                daemon=True,
            )
            for i in range(size)
        ]

    def __enter__(self) -> Self:
        for process in self._processes:
            process.start()
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def run(self, jobs: Sequence[Job], *, timeout: float) -> list[JobResult]:
        if len(jobs) > self.size:
            raise ValueError(f"{len(jobs)} jobs for {self.size} processes")
        for index, job in enumerate(jobs):
            self._inboxes[index].put(job)
        results: dict[int, JobResult] = {}
        deadline = time.monotonic() + timeout
        while len(results) < len(jobs):
            try:
                index, reply = self._outbox.get(timeout=1.0)
            except queue.Empty:
                dead = [p.name for p in self._processes[: len(jobs)] if not p.is_alive()]
                if dead:
                    raise BenchError(f"load process(es) {', '.join(dead)} died") from None
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"load processes did not finish within {timeout:.0f}s"
                    ) from None
                continue
            if isinstance(reply, str):
                raise BenchError(f"load process {index} failed:\n{reply}")
            results[index] = reply
        return [results[i] for i in range(len(jobs))]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
