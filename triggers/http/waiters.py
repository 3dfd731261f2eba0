"""Requests that wait for a run to end (``/sync``, a status ``?wait=N``): at most
IOLINKER_STATUS_MAX_WAITERS at once in this process, because each holds a
request thread and triggers must keep some.
"""

import threading

from django.conf import settings

from triggers.http.service import execution_wait_final


class Waiters:
    """The waiting requests of this process (one instance, ``WAITERS``)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0

    def wait_final(self, uid: int, timeout: float, *, otherwise):
        """The run once final or after ``timeout`` (None if deleted meanwhile);
        ``otherwise`` at once when as many requests wait already."""
        with self.lock:
            if self.count >= settings.IOLINKER_STATUS_MAX_WAITERS:
                return otherwise
            self.count += 1
        try:
            return execution_wait_final(uid=uid, timeout=timeout)
        finally:
            with self.lock:
                self.count -= 1


WAITERS = Waiters()
