"""Reads of runs that are not trivial: a run's status body and detail, waiting for
a final state, per-workflow and per-API run statistics, and the dashboard's
numbers."""

from datetime import datetime, timedelta

from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import TruncMinute
from django.utils import timezone

from workflows.ids import uid_at
from workflows.models import Execution, ExecutionStatus
from workflows.notify import finished_wait
from workflows.storedjson import Unreadable

# Runs that count as failures in the admin's counts and success rates.
FAILURE_STATUSES = [ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT]
# p50/p95 durations are taken over at most this many of the newest finished runs.
DURATION_SAMPLE = 2000


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
    data, msg = execution.output if execution.is_final else None, execution.error if failed else ""
    if isinstance(data, Unreadable):  # (a row stored before intake refused such values)
        data, msg = None, f"The run's output cannot be read ({data})"
    return {
        "uid": str(execution.uid),
        "status": execution.status,
        "data": data,
        "code": RUN_CODES[execution.status],
        "msg": msg,
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


# --- Admin reads: counts for list pages and the dashboard ----------------------
#
# Each is one query for a whole page (never one per row), and reads a uid range
# (uids are time-ordered, workflows/ids.py uid_at) through the indexes that
# start with api, workflow or status (workflows/models.py), never a full scan.


def runs_by_parent(*, field: str, ids: list[int], since: datetime) -> dict[int, dict]:
    """Per API or workflow (``field``: "api" or "workflow"): runs since ``since``,
    failed ones among them, finished ones, and the newest run's uid and status."""
    if not ids:
        return {}
    counts = (
        Execution.objects.filter(**{f"{field}_id__in": ids}, uid__gte=uid_at(since))
        .values(f"{field}_id")
        .annotate(
            runs=Count("uid"),
            failures=Count("uid", filter=Q(status__in=FAILURE_STATUSES)),
            succeeded=Count("uid", filter=Q(status=ExecutionStatus.SUCCEEDED)),
        )
    )
    stats = {
        row[f"{field}_id"]: {
            "runs": row["runs"],
            "failures": row["failures"],
            "succeeded": row["succeeded"],
            "last_uid": None,
            "last_status": None,
        }
        for row in counts
    }
    newest = Execution.objects.filter(**{field: OuterRef("pk")}).order_by("-uid")
    model = Execution._meta.get_field(field).related_model
    latest = (
        model.objects.filter(pk__in=ids)
        .annotate(
            last_uid=Subquery(newest.values("uid")[:1]),
            last_status=Subquery(newest.values("status")[:1]),
        )
        .values_list("pk", "last_uid", "last_status")
    )
    empty = {"runs": 0, "failures": 0, "succeeded": 0}
    for pk, last_uid, last_status in latest:
        entry = stats.setdefault(pk, dict(empty))
        entry["last_uid"], entry["last_status"] = last_uid, last_status
    return stats


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _durations(since: datetime) -> list[float]:
    rows = (
        Execution.objects.filter(uid__gte=uid_at(since), finished_at__isnull=False)
        .exclude(started_at=None)
        .order_by("-uid")
        .values_list("started_at", "finished_at")[:DURATION_SAMPLE]
    )
    return sorted((end - start).total_seconds() for start, end in rows)


def dashboard_stats(*, now: datetime | None = None) -> dict:
    """The admin index: the last hour and day of accepted triggers, runs and
    durations, the queue, and runs per minute over the last hour (refused calls
    are counted by triggers: iolinker.admin_site adds them)."""
    now = now or timezone.now()
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    accepted = Q(api__isnull=False, rerun_of__isnull=True, parent__isnull=True)
    by_status = (
        Execution.objects.filter(uid__gte=uid_at(day))
        .values("status")
        .annotate(
            day=Count("uid"),
            hour=Count("uid", filter=Q(uid__gte=uid_at(hour))),
            triggers_day=Count("uid", filter=accepted),
            triggers_hour=Count("uid", filter=accepted & Q(uid__gte=uid_at(hour))),
        )
    )
    statuses = {status: {"hour": 0, "day": 0} for status in ExecutionStatus.values}
    triggers = {"hour": 0, "day": 0}
    for row in by_status:
        statuses[row["status"]] = {"hour": row["hour"], "day": row["day"]}
        triggers["hour"] += row["triggers_hour"]
        triggers["day"] += row["triggers_day"]
    pending = dict(
        Execution.objects.filter(
            status__in=[ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.WAITING]
        )
        .values("status")
        .annotate(n=Count("uid"))
        .values_list("status", "n")
    )
    durations = {"hour": _durations(hour), "day": _durations(day)}
    per_minute = {
        row["minute"]: row
        for row in Execution.objects.filter(uid__gte=uid_at(hour))
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(runs=Count("uid"), failures=Count("uid", filter=Q(status__in=FAILURE_STATUSES)))
    }
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    minutes = []
    for i in range(60):
        at = start + timedelta(minutes=i)
        row = per_minute.get(at, {})
        minutes.append({"at": at, "runs": row.get("runs", 0), "failures": row.get("failures", 0)})
    return {
        "now": now,
        "triggers_accepted": triggers,
        "statuses": statuses,
        "queue": {status: pending.get(status, 0) for status in ("queued", "running", "waiting")},
        "durations": {
            window: {
                "p50": _percentile(values, 0.50),
                "p95": _percentile(values, 0.95),
                "sample": len(values),
            }
            for window, values in durations.items()
        },
        "per_minute": minutes,
    }
