"""The one owner of the app's background tasks (issue 12 §2).

Every task that outlives the call that started it — the supervised loops, fire-and-forget work (A2A side
effects, restarts after a secret or plugin change, queue drains, the orchestrator's provision jobs),
batching workers — is started by `TaskSupervisor.spawn`: the task gets a name, a strong reference until it
ends (the event loop keeps only weak ones), and its crash is logged once, with that name. At shutdown the
app calls `shutdown(deadline)` once: the tasks get until the deadline to finish, the rest are cancelled,
and nothing can be spawned afterwards.

Groups name a kind of work so its starter can wait for it or stop it early (`wait`, `cancel`): the loop
supervisor stops its loops and the restarts they started before the lease is given up.

`daemon=True` marks a worker that runs until its owner closes it (the Redis bus reader, which must keep
delivering while the rest of the app closes): shutdown neither waits for it nor cancels it.

Agents are not background tasks: local processes and containers outlive the server and are adopted on
the next start (docs/decisions.md); the backend owns them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class SupervisorClosed(RuntimeError):
    """`spawn` after `shutdown`: the app is stopping, no new background work."""


class TaskSupervisor:
    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], tuple[str, bool]] = {}  # task -> (group, daemon)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(
        self,
        name: str,
        coro: Coroutine[Any, Any, T],
        *,
        group: str = "",
        awaited: bool = False,
        daemon: bool = False,
    ) -> asyncio.Task[T]:
        """Start `coro` as a task named `name`, referenced until it ends.

        A crash (an Exception, not cancellation) is logged once with the name, unless `awaited`: then the
        caller awaits the task and handles its error itself (a request waiting on detached work).
        """
        if self._closed:
            coro.close()  # never started: no "coroutine was never awaited" warning
            raise SupervisorClosed(f"task supervisor is shut down; {name} not started")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = (group, daemon)
        task.add_done_callback(self._done if not awaited else self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s crashed", task.get_name(), exc_info=exc)

    def tasks(self, group: str | None = None) -> list[asyncio.Task[Any]]:
        """The running tasks (of `group`, when given)."""
        return [t for t, (g, _daemon) in self._tasks.items() if group is None or g == group]

    async def wait(self, group: str) -> None:
        """Wait until the tasks of `group` running now have ended (whatever their outcome)."""
        await asyncio.gather(*self.tasks(group), return_exceptions=True)

    async def cancel(self, group: str) -> None:
        """Cancel the tasks of `group` and wait until they have stopped."""
        await _cancel(self.tasks(group))

    async def shutdown(self, deadline: float) -> None:
        """Refuse new tasks, give the running ones up to `deadline` seconds to finish, cancel the rest.

        Tasks spawned by draining tasks meanwhile are drained too. Daemons are left to their owners.
        """
        until = time.monotonic() + deadline
        while True:
            pending = [t for t, (_g, daemon) in self._tasks.items() if not daemon and not t.done()]
            left = until - time.monotonic()
            if not pending or left <= 0:
                break
            await asyncio.wait(pending, timeout=left)
        self._closed = True
        late = [t for t, (_g, daemon) in self._tasks.items() if not daemon and not t.done()]
        for task in late:
            log.info("background task %s still running at shutdown; cancelled", task.get_name())
        await _cancel(late)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
