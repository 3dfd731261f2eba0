import time

from workflows.models import Execution


def _iso(value):
    return value.isoformat() if value else None


def execution_detail(*, uid: int) -> dict | None:
    """An execution with its step runs, as JSON-ready data (uids as strings)."""
    execution = (
        Execution.objects.select_related("workflow", "api")
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
                "type": run.type,
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


def execution_wait_final(*, uid: int, timeout: float, interval: float = 0.2) -> Execution:
    """Poll until the execution is final or ``timeout`` seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while True:
        execution = Execution.objects.get(uid=uid)
        if execution.is_final or time.monotonic() >= deadline:
            return execution
        time.sleep(interval)
