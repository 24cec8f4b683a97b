"""Cancellation that must not be lost by loops that survive their own failures."""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelling"]


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task has been asked to stop.

    For `except Exception` handlers of long-running loops (workers, sweepers): when a
    cancellation races an inner timeout (asyncio.timeout, redis-py's socket and pool
    timeouts), the timeout may surface as TimeoutError while the task's cancellation is
    still pending (`Task.cancelling()`, see python/cpython#134471). A loop that logged it
    and went round again would outlive its shutdown; this ends it instead.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop: nothing to cancel
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
