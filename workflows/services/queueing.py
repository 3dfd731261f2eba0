"""The run queue as this process sees it: the per-process django-q2 broker (made
after fork), the push of one message for a list of runs (``queue_push``), and the
one rule for writing runs and pushing their message, ``write_then_push``.

ORM broker: the message is a row in our database, so the write and the push are
one transaction (an outbox for free). Redis broker: the push cannot join our
transaction, so the write commits first, then the message is pushed; if the push
fails the write is undone and ``QueueUnavailable`` raised (a process dying in
between leaves ``queued`` rows, which the reaper pushes again:
workflows/lifecycle.py). Every "write, then push, or undo" of the app goes
through ``write_then_push``; the group-committed PostgreSQL statement that writes
runs and message at once (workflows/services/intake.py) is the one exception, by
construction atomic.
"""

import logging
import threading
from collections.abc import Callable, Sequence

from django.db import connection, transaction
from django_q.brokers.orm import ORM
from django_q.tasks import async_task

from workflows.errors import QueueUnavailable
from workflows.notify import release_pooled_connection
from workflows.process import PerProcess

logger = logging.getLogger("workflows.services")

RUN_TASK = "workflows.tasks.run_executions"


class MessageCapture(ORM):
    """django-q2's ORM broker, except that ``enqueue`` keeps the signed message
    (per thread) instead of saving it, so that the trigger path can write it in
    the statement that writes the runs it carries."""

    def __init__(self):
        super().__init__()
        self._local = threading.local()

    def enqueue(self, task: str) -> None:
        self._local.payload = task

    def take(self) -> str:
        payload, self._local.payload = self._local.payload, None
        return payload


class ProcessState:
    """Made after fork: one django-q2 broker (a Redis broker opens a connection
    per instance) and one group-commit intake per process (its ``intake`` is set
    by workflows/services/intake.py)."""

    broker = None
    capture: MessageCapture | None = None
    intake = None
    # Worker side: the chunk size that last took about CHUNK_SECONDS, definitions
    # of workflow versions (immutable, so kept), and the environment variables
    # (expiry, values), kept IOLINKER_API_CACHE_SECONDS.
    chunk_size = 1
    versions: dict[int, dict] = {}
    env: tuple[float, dict] = (0.0, {})


# Run in the first call of each process (the intake registers its committer).
_STARTERS: list[Callable[[type[ProcessState]], None]] = []


def _process_start() -> type[ProcessState]:
    from django_q.brokers import get_broker

    ProcessState.broker = get_broker()
    ProcessState.capture = MessageCapture() if queue_is_transactional() else None
    for starter in _STARTERS:
        starter(ProcessState)
    return ProcessState


# Hold no pooled connection while waiting: the thread making the state needs one
# (django-q2's broker reads the autocommit flag), and threads parked here holding
# all of them deadlocked a web process (found by the benchmark).
_STATE = PerProcess(_process_start, before_make=release_pooled_connection)


# This process's queue state, made on first use after each fork (the bound method
# itself: one call less on the trigger path).
process: Callable[[], type[ProcessState]] = _STATE.get


def process_starter_register(starter: Callable[[type[ProcessState]], None]) -> None:
    if starter not in _STARTERS:
        _STARTERS.append(starter)


def process_caches_clear() -> None:
    """Forget the worker's cached definitions and environment (tests, between
    databases)."""
    ProcessState.versions.clear()
    ProcessState.env = (0.0, {})


def queue_is_transactional() -> bool:
    """The ORM broker writes its message in our database, so in our transaction."""
    from django_q.conf import Conf

    return bool(Conf.ORM)


def queue_in_same_statement() -> bool:
    """PostgreSQL with django-q2's queue table in the same database: runs and their
    message go in one statement, atomic without BEGIN/COMMIT round trips."""
    from django_q.conf import Conf

    return connection.vendor == "postgresql" and connection.alias == Conf.ORM


def queue_push(*, uids: Sequence[int], broker=None) -> None:
    """One queue message for a list of runs (a worker runs them in order)."""
    async_task(
        RUN_TASK, uids, task_name=f"{uids[0]}+{len(uids) - 1}", broker=broker or process().broker
    )


def write_then_push(
    *,
    write: Callable[[], Sequence[int]],
    undo: Callable[[Sequence[int]], None] | None,
    atomic_write: bool = False,
) -> Sequence[int]:
    """Write runs and push one message for the uids ``write()`` returns (none: no
    message); returns those uids.

    ORM broker: ``write()`` and the message in one transaction. Redis broker:
    ``write()`` commits (in a transaction of its own with ``atomic_write``, else
    it is one statement), then the message is pushed; if the push fails,
    ``undo(uids)`` removes what was written and ``QueueUnavailable`` is raised.
    ``undo=None``: the runs stay ``queued`` and the error propagates (the reaper
    pushes them again).
    """
    if queue_is_transactional():
        with transaction.atomic():
            uids = write()
            if uids:
                queue_push(uids=uids)
        return uids
    if atomic_write:
        with transaction.atomic():
            uids = write()
    else:
        uids = write()
    if not uids:
        return uids
    if undo is None:
        queue_push(uids=uids)  # lost push: the reaper pushes queued runs again
        return uids
    try:
        queue_push(uids=uids)
    except Exception as exc:
        logger.error("Could not queue executions %s: %s", list(uids), exc)
        undo(uids)
        raise QueueUnavailable() from exc
    return uids
