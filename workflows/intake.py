"""Group commit for accepted runs.

Concurrent triggers in one process share one statement (PostgreSQL) or one
transaction: each request thread hands its run to the process's committer
thread and waits; the committer takes every run waiting, writes them together
with their queue message, and wakes their threads. Nobody answers before the
write that holds its run is durable, so durability is that of one trigger per
transaction, at a fraction of the round trips and CPU.

A dedicated committer thread (rather than electing a leader among the waiting
request threads) matters because of the GIL: handing leadership from thread to
thread cost 4–10 ms per batch under load (the next leader has to win the GIL
from 30 busy threads first), as much as the write itself.

A caller inside a transaction (``inline()`` true) writes its own run at once on
its own connection, so that the run commits or rolls back with that transaction.
"""

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

MAX_BATCH = 256
IDLE_SECONDS = 0.5


class _Pending:
    """A run waiting for its write. ``done`` is held until then (a bare lock:
    cheaper to wait on and to wake than an Event)."""

    __slots__ = ("item", "done", "error")

    def __init__(self, item):
        self.item = item
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None


class GroupCommit:
    def __init__(
        self,
        commit: Callable[[list], None],
        *,
        max_batch: int = MAX_BATCH,
        inline: Callable[[], bool] = lambda: False,
        before_wait: Callable[[], None] = lambda: None,
        when_idle: Callable[[], None] = lambda: None,
        after_error: Callable[[], None] = lambda: None,
    ):
        self._commit = commit
        self._inline = inline
        self._before_wait = before_wait
        self._when_idle = when_idle
        self._after_error = after_error
        self._max_batch = max_batch
        self._ready = threading.Condition()
        self._waiting: list[_Pending] = []
        self._thread: threading.Thread | None = None

    def submit(self, item) -> None:
        """Return once `item` is committed; raise if its batch failed."""
        if self._inline():
            self._commit([item])
            return
        self._before_wait()
        pending = _Pending(item)
        with self._ready:
            self._waiting.append(pending)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="iolinker-group-commit", daemon=True
                )
                self._thread.start()
            self._ready.notify()
        pending.done.acquire()
        if pending.error is not None:
            raise pending.error

    def _run(self) -> None:
        while True:
            with self._ready:
                # Keep the connection while runs keep coming (a pool checkout per
                # batch costs GIL round trips); give it back after a quiet spell.
                idle = not self._waiting and not self._ready.wait(IDLE_SECONDS)
            if idle:
                self._call(self._when_idle)
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
            try:
                self._commit([p.item for p in batch])
            except BaseException as exc:  # every caller in the batch gets the error
                for p in batch:
                    p.error = exc
                self._call(self._after_error)
            for p in batch:
                p.done.release()

    @staticmethod
    def _call(hook: Callable[[], None]) -> None:
        # A failing hook must not end the committer (runs would wait forever).
        try:
            hook()
        except Exception:
            logger.exception("Group commit hook %s failed", hook)
