"""The errors the workflows domain raises: what went wrong for a run, in the
domain's words, never an HTTP status. ``iolinker.errors.DOMAIN_ERRORS`` maps each
one, once, to a row of the error table (``ApiError.from_domain``); the admin shows
their message; management commands turn them into ``CommandError``."""


class WorkflowsError(Exception):
    """Base of the domain's errors; ``str(exc)`` is a message for a person."""

    default_message = ""

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)


class Unavailable(WorkflowsError):
    """A part the platform needs (the queue, the database, the uid lease) cannot
    be used now; trying again later may work. Never one call's fault."""


class QueueUnavailable(Unavailable):
    """The run queue refused the message; the runs it carried were removed."""

    default_message = "The run queue is unavailable, try again later"


class UidUnavailable(Unavailable, RuntimeError):
    """No uid can be issued now (no free instance number, clock went back)."""


class InputUnstorable(WorkflowsError):
    """A run's input no database can store or read back (workflows/storedjson.py)."""


class WorkflowDisabled(WorkflowsError):
    """A disabled workflow starts no new runs."""


class NotCancellable(WorkflowsError):
    """The run already ended; the message says how."""


class NotRerunnable(WorkflowsError):
    """The run's input cannot be read back (workflows/storedjson.py), so it cannot
    be run again."""


__all__ = [
    "InputUnstorable",
    "NotCancellable",
    "NotRerunnable",
    "QueueUnavailable",
    "UidUnavailable",
    "Unavailable",
    "WorkflowDisabled",
    "WorkflowsError",
]
