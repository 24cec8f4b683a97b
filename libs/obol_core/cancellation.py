"""Cancellation that must not be lost by loops that survive their own failures."""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelling"]


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task has been asked to stop.

    For long-running loops (workers, sweepers) that survive their own failures: call it at
    the top of each round and in their `except Exception` handler. When a cancellation
    races an inner timeout (asyncio.timeout, redis-py's socket and pool timeouts), it may
    surface as TimeoutError, which a handler inside the round can log and swallow, while
    the task's cancellation is still pending (`Task.cancelling()`, see
    python/cpython#134471). A loop that went round again would outlive its shutdown; this
    ends it instead.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop: nothing to cancel
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
