"""Per-process state, one idiom for all of it: whatever a process makes for itself
and must not share with a parent it was forked from (a django-q2 broker, the
intake's committer thread, the run watch thread, the LISTEN connection, rate-limit
storage) is a ``PerProcess``. Its ``get()`` makes the value on first use in each
process (the pid says which process; a fork copies the value but not the threads
or sockets behind it) under a lock that is made anew after fork (a lock another
thread held at fork time would stay held in the child forever).
"""

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_ALL: "weakref.WeakSet[PerProcess]" = weakref.WeakSet()


class PerProcess(Generic[T]):
    """This process's ``make()``, made on first ``get()`` after start or fork.
    ``before_make`` runs before waiting for the lock (a thread about to wait must
    give back what the maker may need, such as a pooled connection)."""

    __slots__ = ("_make", "_before_make", "_lock", "pid", "value", "__weakref__")

    def __init__(self, make: Callable[[], T], *, before_make: Callable[[], None] | None = None):
        self._make = make
        self._before_make = before_make
        self._lock = threading.Lock()
        self.pid: int | None = None
        self.value: T | None = None
        _ALL.add(self)

    def get(self) -> T:
        if self.pid != os.getpid():
            if self._before_make is not None:
                self._before_make()
            with self._lock:
                if self.pid != os.getpid():
                    self.value = self._make()
                    self.pid = os.getpid()
        return self.value

    def peek(self) -> T | None:
        """This process's value if it was made, else None (never makes it)."""
        return self.value if self.pid == os.getpid() else None

    def forget(self) -> T | None:
        """Make the value again on next use; returns this process's old one."""
        with self._lock:
            old = self.peek()
            self.pid, self.value = None, None
        return old

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def _after_fork_in_child() -> None:
    for state in list(_ALL):
        state._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
