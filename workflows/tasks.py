"""django-q2 task entry points: take an id, let the service re-fetch the row."""

from workflows.services import execution_recover_stale, execution_run


def run_execution(uid: int) -> None:
    execution_run(uid=uid)


def recover_stale_executions() -> dict[str, int]:
    """Scheduled every minute (migration workflows 0002)."""
    return execution_recover_stale()
