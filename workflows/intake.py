"""Group commit for accepted runs.

Concurrent triggers in one process share a transaction: a thread that arrives
while fewer than MAX_LEADERS batches are in flight becomes a leader, takes the
runs waiting behind it (its own first), writes them with one multi-row INSERT
and one queue message, commits, and wakes their threads; leadership then passes
to the oldest run still waiting. Nobody answers before the
commit that holds its run, so durability is that of one trigger per
transaction, at a fraction of the round trips and fsyncs. Without concurrency
every run is its own batch, committed by its own thread on its own connection
(exactly the unbatched behaviour, so tests inside a transaction work as usual).
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_BATCH = 256
# Batches in flight at once per process: while one waits on the database,
# another can be written (the database groups their commits too).
MAX_LEADERS = 1


@dataclass(eq=False)
class _Pending:
    item: object
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    error: BaseException | None = None


class GroupCommit:
    def __init__(
        self,
        commit: Callable[[list], None],
        max_batch: int = MAX_BATCH,
        max_leaders: int = MAX_LEADERS,
        before_wait: Callable[[], None] = lambda: None,
    ):
        self._commit = commit
        self._before_wait = before_wait
        self._max_batch = max_batch
        self._max_leaders = max_leaders
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._leaders = 0

    def submit(self, item) -> None:
        """Return once `item` is committed; raise if its batch failed."""
        pending = _Pending(item)
        with self._lock:
            self._waiting.append(pending)
            pending.lead = self._leaders < self._max_leaders
            if pending.lead:
                self._leaders += 1
        if not pending.lead:
            self._before_wait()
            pending.done.wait()
        if pending.lead:
            self._lead(pending)
        if pending.error is not None:
            raise pending.error

    def _lead(self, own: _Pending) -> None:
        # Take the followers waiting (not runs whose own thread leads them).
        with self._lock:
            batch, rest = [own], []
            for p in self._waiting:
                if p is not own:
                    (batch if not p.lead and len(batch) < self._max_batch else rest).append(p)
            self._waiting = rest
        try:
            self._commit([p.item for p in batch])
        except BaseException as exc:
            for p in batch:
                p.error = exc
        finally:
            with self._lock:
                for p in batch:
                    p.lead = False
                    p.done.set()
                successor = next((p for p in self._waiting if not p.lead), None)
                if successor is not None:
                    successor.lead = True
                    successor.done.set()
                else:
                    self._leaders -= 1
