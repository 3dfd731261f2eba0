"""django-q2 task entry points: take ids, let the services re-fetch the rows."""

from workflows.services import execution_recover_stale, execution_run_batch


def run_executions(uids: list[int]) -> None:
    execution_run_batch(uids=uids, steal=True)


def recover_stale_executions() -> dict[str, int]:
    """Scheduled every minute (migration workflows 0002)."""
    return execution_recover_stale()
