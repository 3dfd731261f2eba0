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

A batch that fails for a reason that may be one run's own (``retry_alone(exc)``:
a value the database refused, a bug) is written again run by run, so that only
that run's caller gets the error; a failure of the database itself fails the
batch at once (retrying 256 runs against a database that is down would only
make their callers wait).
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
        retry_alone: Callable[[BaseException], bool] = lambda exc: False,
    ):
        self._commit = commit
        self._inline = inline
        self._before_wait = before_wait
        self._when_idle = when_idle
        self._after_error = after_error
        self._retry_alone = retry_alone
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
            self._write(batch)
            for p in batch:
                p.done.release()

    def _write(self, batch: list[_Pending]) -> None:
        try:
            self._commit([p.item for p in batch])
            return
        except BaseException as exc:
            self._call(self._after_error)
            if len(batch) == 1 or not self._retry_alone(exc):
                for p in batch:  # every caller in the batch gets the error
                    p.error = exc
                return
            logger.warning(
                "A batch of %s runs failed (%r); writing them one by one", len(batch), exc
            )
        for p in batch:
            try:
                self._commit([p.item])
            except BaseException as exc:
                p.error = exc
                self._call(self._after_error)

    @staticmethod
    def _call(hook: Callable[[], None]) -> None:
        # A failing hook must not end the committer (runs would wait forever).
        try:
            hook()
        except Exception:
            logger.exception("Group commit hook %s failed", hook)
