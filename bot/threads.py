"""Work done in a thread of our own, its result awaited on the loop; and waiting
for work unless the bot is stopped meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def settling(work: Callable[[], T]) -> tuple[asyncio.Future[T], Callable[[], None]]:
    """A future on the running loop, and the job (to run in any thread) that does
    `work` and settles the future with its result or its exception. Once the loop
    is gone, or the future cancelled, the result is dropped: nobody waits."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def job() -> None:
        try:
            result = work()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, result, None)

    return done, job


def in_daemon_thread(work: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`work` on a daemon thread of its own: a stop meanwhile is not held up by it
    (a model download can take minutes, and the process may exit before it ends)."""
    done, job = settling(work)
    threading.Thread(target=job, name=name, daemon=True).start()
    return done


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> tuple[bool, T | None]:
    """(True, result) when `work` ends first, (False, None) when `stop` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
        return False, None
    return True, task.result()
