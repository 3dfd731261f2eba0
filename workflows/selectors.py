from workflows.models import Execution, ExecutionStatus
from workflows.notify import finished_wait


def _iso(value):
    return value.isoformat() if value else None


# The `code` of a run as callers see it: 0 unless it ended without succeeding.
RUN_CODES = {
    ExecutionStatus.QUEUED: 0,
    ExecutionStatus.RUNNING: 0,
    ExecutionStatus.WAITING: 0,
    ExecutionStatus.SUCCEEDED: 0,
    ExecutionStatus.FAILED: 1,
    ExecutionStatus.CANCELLED: 2,
    ExecutionStatus.TIMED_OUT: 3,
}


def execution_status(execution: Execution) -> dict:
    """A run as its caller sees it (the status endpoint's body)."""
    failed = RUN_CODES[execution.status] != 0
    return {
        "uid": str(execution.uid),
        "status": execution.status,
        "data": execution.output if execution.is_final else None,
        "code": RUN_CODES[execution.status],
        "msg": execution.error if failed else "",
        "createdAt": _iso(execution.created_at),
        "startedAt": _iso(execution.started_at),
        "finishedAt": _iso(execution.finished_at),
    }


def execution_detail(*, uid: int) -> dict | None:
    """An execution with its step runs, as JSON-ready data (uids as strings)."""
    execution = (
        Execution.objects.select_related("workflow", "api", "version")
        .prefetch_related("step_runs")
        .filter(uid=uid)
        .first()
    )
    if execution is None:
        return None
    return {
        "uid": str(execution.uid),
        "status": execution.status,
        "workflow": execution.workflow.name,
        "api": str(execution.api) if execution.api else None,
        "attempts": execution.attempts,
        "version": execution.version.number if execution.version else None,
        "parent": str(execution.parent_id) if execution.parent_id else None,
        "rerunOf": str(execution.rerun_of_id) if execution.rerun_of_id else None,
        "resumeAt": _iso(execution.resume_at),
        "createdAt": _iso(execution.created_at),
        "startedAt": _iso(execution.started_at),
        "finishedAt": _iso(execution.finished_at),
        "input": execution.input,
        "output": execution.output,
        "error": execution.error,
        "steps": [
            {
                "position": run.position,
                "key": run.key,
                "path": run.path,
                "type": run.type,
                "attempts": run.attempts,
                "status": run.status,
                "durationMs": run.duration_ms,
                "input": run.input,
                "output": run.output,
                "error": run.error,
                "logs": run.logs,
            }
            for run in execution.step_runs.all()
        ],
    }


def execution_wait_final(*, uid: int, timeout: float) -> Execution | None:
    """The execution once final, or as it is after ``timeout`` seconds (woken by
    the worker's notification on PostgreSQL, see workflows/notify.py); None if it
    was deleted meanwhile."""
    latest: list[Execution | None] = []

    def is_final() -> bool:
        latest[:] = [Execution.objects.filter(uid=uid).first()]
        return latest[0] is None or latest[0].is_final

    finished_wait(uid, timeout, is_final)
    return latest[0]
