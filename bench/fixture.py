"""Database side of the benchmark, run inside Django by bench/run.py (`manage.py shell`)."""

from django_q.brokers import get_broker

from triggers.models import ApiDefinition, AuthMode
from triggers.services import api_set_token
from workflows.models import Execution, ExecutionStatus, StepRun
from workflows.services import workflow_create

REFERENCE_STEPS = [
    (
        "prepare",
        "transform",
        {"value": {"name": "{{ body.name }}", "count": "{{ body['items'] | length }}"}},
    ),
    (
        "compute",
        "code",
        {
            "input": "{{ steps.prepare }}",
            "code": "return {'greeting': 'Hello, ' + data['name'], 'double': data['count'] * 2}",
        },
    ),
    ("result", "output", {"value": "{{ steps.compute }}"}),
]


def bench_setup() -> str:
    """The reference workflow behind a token-auth POST API; returns the token."""
    workflow = workflow_create(name="reference", steps=REFERENCE_STEPS)
    api = ApiDefinition.objects.create(
        module="bench", method="reference", auth_mode=AuthMode.TOKEN, workflow=workflow
    )
    return api_set_token(api=api)


def bench_clear() -> None:
    StepRun.objects.all().delete()
    Execution.objects.all().delete()
    get_broker().purge_queue()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def bench_stats() -> dict:
    total = Execution.objects.count()
    final = Execution.objects.filter(
        status__in=[ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED]
    ).count()
    stats = {
        "total": total,
        "final": final,
        "succeeded": Execution.objects.filter(status=ExecutionStatus.SUCCEEDED).count(),
        # Claimed more than once (a redelivery past a lost claim): should stay 0.
        "rerun": Execution.objects.filter(attempts__gt=1).count(),
        "queue": get_broker().queue_size(),
    }
    if final and final == total:
        rows = list(Execution.objects.values_list("created_at", "started_at", "finished_at"))
        first = min(r[0] for r in rows)
        last = max(r[2] for r in rows)
        starts = [(r[1] - r[0]).total_seconds() * 1000 for r in rows]
        stats |= {
            "seconds": (last - first).total_seconds(),
            "runs_per_s": total / max((last - first).total_seconds(), 1e-9),
            "start_p50_ms": _percentile(starts, 0.50),
            "start_p99_ms": _percentile(starts, 0.99),
        }
    return stats


def bench_missing(path: str) -> int:
    """How many of the uids callers were answered with are not stored."""
    import json
    from pathlib import Path

    answered = {int(uid) for uid in json.loads(Path(path).read_text())}
    stored = set(Execution.objects.filter(uid__in=answered).values_list("uid", flat=True))
    return len(answered - stored)
