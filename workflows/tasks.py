"""django-q2 task entry points: take ids, let the services re-fetch the rows."""

from django.db import InterfaceError, OperationalError, connection

from workflows.lifecycle import execution_recover_stale, execution_resume_due
from workflows.retention import execution_purge
from workflows.services import execution_run_batch, execution_worker_may_steal


def run_executions(uids: list[int]) -> None:
    steal = execution_worker_may_steal()
    try:
        execution_run_batch(uids=uids, steal=steal)
    except (OperationalError, InterfaceError):
        # A connection that died while the worker waited (a database restart, a
        # network cut) fails its first query; django-q2 would fail the task, and
        # with Redis its message is gone until the sweeper re-queues the runs.
        # Once more on a new connection: runs claimed before the error are not
        # claimed again (their lease lapses and the reaper takes them back).
        connection.close()
        execution_run_batch(uids=uids, steal=steal)


def recover_stale_executions() -> dict[str, int]:
    """Scheduled every minute (migration workflows 0002)."""
    return execution_recover_stale()


def resume_waiting_executions() -> int:
    """Scheduled once at each wake-up time of waiting runs (services.running._resume_schedule)."""
    return execution_resume_due()


def purge_executions() -> int:
    """Scheduled every 15 minutes (migration workflows 0005)."""
    return execution_purge()
