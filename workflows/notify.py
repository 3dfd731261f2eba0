"""Wake callers waiting for runs to finish (the status endpoint's ``?wait=``,
``fire_api --wait``).

Workers announce finished uids with PostgreSQL ``NOTIFY`` in the transaction
that records them, so the notification arrives once the result is readable.
Each process with waiters runs one listener thread on one extra connection;
a waiter registers its uid, re-reads the row, then sleeps on an Event. Waiters
re-read the row at least every second anyway: a lost notification (the
listener reconnecting) or a database without NOTIFY (SQLite, where waiters
poll with back-off) costs latency, never a wrong answer.
"""

import logging
import threading
import time

from django.db import connection

from workflows.process import PerProcess

logger = logging.getLogger(__name__)

CHANNEL = "iolinker_finished"
# NOTIFY payloads are limited to 8000 bytes; a uid is at most 19 digits.
UIDS_PER_NOTIFY = 380


def finished_announce(uids: list[int]) -> None:
    """Call inside the transaction that records these runs' final states."""
    if connection.vendor != "postgresql" or not uids:
        return
    with connection.cursor() as cursor:
        for start in range(0, len(uids), UIDS_PER_NOTIFY):
            payload = ",".join(map(str, uids[start : start + UIDS_PER_NOTIFY]))
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])


class _Listener:
    """This process's LISTEN connection and the waiters it wakes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.waiters: dict[int, set[threading.Event]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="iolinker-finished", daemon=True)
        self.thread.start()

    def register(self, uid: int) -> threading.Event:
        event = threading.Event()
        with self.lock:
            self.waiters.setdefault(uid, set()).add(event)
        return event

    def unregister(self, uid: int, event: threading.Event) -> None:
        with self.lock:
            events = self.waiters.get(uid)
            if events is not None:
                events.discard(event)
                if not events:
                    del self.waiters[uid]

    def _wake(self, payload: str) -> None:
        with self.lock:
            for text in payload.split(","):
                if text.isascii() and text.isdigit():  # ignore anything else on the channel
                    for event in self.waiters.get(int(text), ()):
                        event.set()

    def _run(self) -> None:
        import psycopg

        delay = 1.0
        while not self.stopping.is_set():
            try:
                with psycopg.connect(**_connect_params(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 1.0
                    while not self.stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._wake(note.payload)
            except Exception as exc:  # noqa: BLE001 - keep listening; waiters poll meanwhile
                logger.warning("Listening for finished runs failed (%s); retrying", exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, 30.0)


def _connect_params() -> dict:
    settings = connection.settings_dict
    params = {
        "dbname": settings["NAME"],
        "user": settings["USER"] or None,
        "password": settings["PASSWORD"] or None,
        "host": settings["HOST"] or None,
        "port": settings["PORT"] or None,
    }
    options = {
        key: value
        for key, value in settings.get("OPTIONS", {}).items()
        if key not in {"pool", "server_side_binding", "isolation_level", "assume_role"}
    }
    return {k: v for k, v in params.items() if v is not None} | options


# Forked: the parent's thread and connection did not come along (workflows/process.py).
_LISTENER = PerProcess(_Listener)


def _get_listener() -> _Listener | None:
    if connection.vendor != "postgresql":
        return None
    return _LISTENER.get()


def listener_stop() -> None:
    """Stop this process's listener, if any (tests: before the database goes)."""
    listener = _LISTENER.forget()
    if listener is not None:
        listener.stopping.set()
        listener.thread.join(5)


def finished_wait(uid: int, timeout: float, is_final) -> None:
    """Sleep until ``is_final()`` is true or ``timeout`` seconds pass.

    ``is_final`` reads the run (a query); between reads the caller holds no
    database connection from the pool.
    """
    deadline = time.monotonic() + timeout
    listener = _get_listener()
    event = listener.register(uid) if listener else None
    interval = 0.05
    try:
        while not is_final():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            release_pooled_connection()
            if event is not None:
                event.wait(min(remaining, 1.0))
                event.clear()
            else:
                time.sleep(min(remaining, interval))
                interval = min(interval * 2, 1.0)
    finally:
        if event is not None:
            listener.unregister(uid, event)


def release_pooled_connection() -> None:
    """Give this thread's pooled connection back before a wait: threads holding
    every connection of the pool while they wait would starve the ones that
    need one (the group committer, other requests)."""
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()
