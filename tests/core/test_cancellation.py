"""A loop that survives its own failures must still stop when its task is cancelled, even
when the cancellation surfaces as another exception (a timeout racing it)."""

import asyncio

import pytest

from obol_core.cancellation import raise_if_cancelling


async def _round_whose_cancel_becomes_a_timeout() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise TimeoutError("what a timeout racing the cancellation can raise") from None


async def _resilient_loop(
    rounds: list[int], *, guarded: bool, stop: asyncio.Event | None = None
) -> None:
    while stop is None or not stop.is_set():
        rounds.append(1)
        try:
            await _round_whose_cancel_becomes_a_timeout()
        except Exception:
            if guarded:
                raise_if_cancelling()
        await asyncio.sleep(0)


async def test_a_cancelled_loop_stops_even_if_the_cancel_surfaced_as_a_timeout() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_resilient_loop(rounds, guarded=True))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert len(rounds) == 1


async def test_without_the_guard_such_a_loop_outlives_its_cancel() -> None:
    rounds: list[int] = []
    stop = asyncio.Event()
    task = asyncio.create_task(_resilient_loop(rounds, guarded=False, stop=stop))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done() and len(rounds) == 2  # still running: the cancel was lost
    stop.set()  # the test's own way out: the next cancelled round ends the loop
    task.cancel()
    await asyncio.wait_for(task, 2)


def test_outside_a_task_or_without_a_cancel_it_does_nothing() -> None:
    raise_if_cancelling()  # no running task

    async def not_cancelled() -> None:
        raise_if_cancelling()

    asyncio.run(not_cancelled())
