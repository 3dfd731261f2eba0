"""A worker process's watch over the runs it is running (one thread per process).

* Cancel: every IOLINKER_CANCEL_POLL_MS it reads the cancel flag of the runs that
  have been running longer than that, and sets their event; the engine stops at
  the next step boundary and a waiting step (code, delay, retry) wakes at once.
  Runs shorter than one poll never cost a query.
* Lease: every third of IOLINKER_RUN_LEASE_SECONDS it pushes ``lease_until`` of
  its runs forward: the runs it is running, and every run it holds (claimed in a
  chunk and not started yet, or finished and not saved yet). A worker that dies
  stops renewing; the reaper then takes the run back
  (lifecycle.execution_recover_stale). A live worker's run is never taken back:
  it would then run twice.

The thread has its own database connection, closed whenever nothing runs.
"""

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import connection

from workflows.models import Execution
from workflows.process import PerProcess

logger = logging.getLogger(__name__)


class _Watch:
    def __init__(self):
        self.lock = threading.Lock()
        self.runs: dict[int, tuple[float, threading.Event]] = {}
        self.held: set[int] = set()
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def register(self, uid: int, event: threading.Event | None = None) -> threading.Event:
        event = event or threading.Event()
        with self.lock:
            self.runs[uid] = (time.monotonic(), event)
            self._start()
        return event

    def hold(self, uids: list[int]) -> None:
        with self.lock:
            self.held.update(uids)
            self._start()

    def release(self, uids: list[int]) -> None:
        with self.lock:
            self.held.difference_update(uids)

    def _start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.stopping = False
            self.thread = threading.Thread(target=self._loop, name="run-watch", daemon=True)
            self.thread.start()

    def unregister(self, uid: int) -> None:
        with self.lock:
            self.runs.pop(uid, None)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            thread = self.thread
        self.wake.set()
        if thread is not None:
            thread.join(timeout=5)
        self.wake.clear()

    def _loop(self) -> None:
        poll = settings.IOLINKER_CANCEL_POLL_MS / 1000
        renew_every = settings.IOLINKER_RUN_LEASE_SECONDS / 3
        last_renew = time.monotonic()
        try:
            while not self.stopping:
                self.wake.wait(poll)
                now = time.monotonic()
                with self.lock:
                    running = dict(self.runs)
                    leased = self.held.union(running)
                if not leased:
                    connection.close()
                    last_renew = now
                    continue
                older = {uid: ev for uid, (since, ev) in running.items() if now - since >= poll}
                try:
                    if older:
                        self._cancel_check(older)
                    if now - last_renew >= renew_every:
                        last_renew = now
                        self._renew(list(leased))
                except Exception as exc:  # noqa: BLE001 - the thread must live on
                    # (InterfaceError is no DatabaseError; a dead thread renews no lease)
                    logger.warning("Run watch could not reach the database: %s", exc)
                    with contextlib.suppress(Exception):
                        connection.close()
        finally:
            connection.close()

    @staticmethod
    def _cancel_check(runs: dict[int, threading.Event]) -> None:
        for uid in Execution.objects.filter(uid__in=list(runs), cancel_requested=True).values_list(
            "uid", flat=True
        ):
            runs[uid].set()

    @staticmethod
    def _renew(uids: list[int]) -> None:
        from workflows.services.transitions import leases_renew

        leases_renew(uids)


# Forked: the parent's thread did not come along (workflows/process.py).
_WATCH = PerProcess(_Watch)


def _watch_for_this_process() -> _Watch:
    return _WATCH.get()


def run_watch_register(uid: int, event: threading.Event | None = None) -> threading.Event:
    """Watch a run this process starts; its event (``event``, or a new one) is set
    when it is cancelled."""
    return _watch_for_this_process().register(uid, event)


def run_watch_unregister(uid: int) -> None:
    _watch_for_this_process().unregister(uid)


def run_watch_hold(uids: list[int]) -> None:
    """Keep renewing the leases of runs this process claimed, from the claim until
    their outcome is saved (a chunk's runs wait their turn, then their save)."""
    _watch_for_this_process().hold(uids)


def run_watch_release(uids: list[int]) -> None:
    _watch_for_this_process().release(uids)


def run_watch_stop() -> None:
    """Stop the thread and close its connection (tests, before dropping the database)."""
    _watch_for_this_process().stop()
