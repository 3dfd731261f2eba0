"""django-q2 task entry points: take ids, let the services re-fetch the rows."""

from workflows.services import (
    execution_recover_stale,
    execution_run_batch,
    execution_worker_may_steal,
)


def run_executions(uids: list[int]) -> None:
    execution_run_batch(uids=uids, steal=execution_worker_may_steal())


def recover_stale_executions() -> dict[str, int]:
    """Scheduled every minute (migration workflows 0002)."""
    return execution_recover_stale()
