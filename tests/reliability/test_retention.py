"""Retention: finished runs (with their step records and callback deliveries)
and idempotency keys are deleted by age, in bounded batches, by a service, a
command (dry run unless --yes) and a django-q2 schedule."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from tests.conftest import make_workflow
from triggers import services as trigger_services
from triggers.models import CallbackDelivery, IdempotencyKey
from workflows.ids import next_uid, uid_at, uid_datetime
from workflows.models import Execution, ExecutionStatus, StepRun
from workflows.retention import execution_purge, executions_expired

pytestmark = pytest.mark.django_db

_seq = iter(range(1, 1_000_000))


def run(workflow, *, days_ago: float, status=ExecutionStatus.SUCCEEDED, **fields) -> Execution:
    """A run created and finished ``days_ago`` days ago (its uid from then too)."""
    at = timezone.now() - timedelta(days=days_ago)
    execution = Execution.objects.create(
        uid=uid_at(at) + next(_seq),
        workflow=workflow,
        status=status,
        created_at=at,
        queued_at=at,
        started_at=at,
        finished_at=at if status in (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED) else None,
        **fields,
    )
    StepRun.objects.create(
        execution=execution,
        position=1,
        key="s",
        type="transform",
        status="succeeded",
        started_at=at,
        finished_at=at,
        duration_ms=1,
    )
    return execution


@pytest.fixture
def workflow():
    return make_workflow("kept", [("s", "transform", {"value": 1})])


def test_uid_at_orders_uids_by_time():
    now = timezone.now()
    uid = next_uid()
    assert uid_at(now - timedelta(seconds=1)) < uid < uid_at(now + timedelta(seconds=1))
    assert abs((uid_datetime(uid_at(now)) - now).total_seconds()) < 1


def test_finished_runs_past_retention_go_with_their_steps_and_callbacks(workflow, settings):
    settings.IOLINKER_RETAIN_EXECUTIONS_DAYS = 30
    old = run(workflow, days_ago=31)
    old_failed = run(workflow, days_ago=40, status=ExecutionStatus.FAILED)
    CallbackDelivery.objects.create(execution=old, status="delivered")
    recent = run(workflow, days_ago=29)
    # Not final, however old: never deleted.
    stuck = [
        run(workflow, days_ago=60, status=status)
        for status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.WAITING)
    ]
    # A run finished long after it was created is kept until it finished long ago.
    late = run(workflow, days_ago=45)
    Execution.objects.filter(uid=late.uid).update(finished_at=timezone.now() - timedelta(days=2))
    # Links to a deleted run are emptied, the linking runs stay.
    child = run(workflow, days_ago=1, parent=old)
    rerun = run(workflow, days_ago=1, rerun_of=old_failed)

    assert execution_purge() == 2
    assert set(Execution.objects.values_list("uid", flat=True)) == {
        recent.uid,
        late.uid,
        child.uid,
        rerun.uid,
        *(e.uid for e in stuck),
    }
    assert not StepRun.objects.filter(execution_id__in=[old.uid, old_failed.uid]).exists()
    assert not CallbackDelivery.objects.exists()
    child.refresh_from_db()
    rerun.refresh_from_db()
    assert child.parent_id is None and rerun.rerun_of_id is None
    assert execution_purge() == 0


def test_the_purge_goes_in_bounded_batches(workflow, settings):
    settings.IOLINKER_RETAIN_EXECUTIONS_DAYS = 30
    runs = [run(workflow, days_ago=31 + i) for i in range(7)]
    # No time left after the first batch: one batch, the oldest runs first.
    assert execution_purge(batch_size=3, time_budget=0) == 3
    assert set(Execution.objects.values_list("uid", flat=True)) == {e.uid for e in runs[:4]}
    with CaptureQueriesContext(connection) as queries:
        assert execution_purge(batch_size=3) == 4
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE FROM")]
    execution_deletes = [sql for sql in deletes if '"workflows_execution"' in sql.split()[2]]
    assert len(execution_deletes) == 2  # 3 + 1 uids, each batch its own statement
    assert not Execution.objects.exists()


def test_retention_zero_keeps_everything(workflow, settings):
    settings.IOLINKER_RETAIN_EXECUTIONS_DAYS = 0
    run(workflow, days_ago=3650)
    assert execution_purge() == 0 and not executions_expired().exists()
    assert Execution.objects.count() == 1


def test_the_command_counts_unless_yes(workflow, settings, capsys):
    settings.IOLINKER_RETAIN_EXECUTIONS_DAYS = 30
    run(workflow, days_ago=31)
    run(workflow, days_ago=10)
    call_command("purge_executions")
    out = capsys.readouterr().out
    assert "Would delete 1 execution(s)" in out and "1 step record(s)" in out
    assert Execution.objects.count() == 2
    call_command("purge_executions", "--days", "5")
    assert "Would delete 2 execution(s)" in capsys.readouterr().out
    call_command("purge_executions", "--yes")
    assert "Deleted 1 execution(s)" in capsys.readouterr().out
    assert Execution.objects.count() == 1
    with pytest.raises(CommandError):
        call_command("purge_executions", "--days", "0")


def test_the_purge_is_scheduled():
    schedule = Schedule.objects.get(name="iolinker: purge old executions")
    assert schedule.func == "workflows.tasks.purge_executions"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 15
    from workflows.tasks import purge_executions

    assert purge_executions() == 0


def test_idempotency_keys_expire_by_age_in_bounded_batches(open_api, settings):
    settings.IOLINKER_IDEMPOTENCY_SECONDS = 3600
    now = timezone.now()
    for i in range(5):
        IdempotencyKey.objects.create(
            api=open_api,
            key=f"old-{i}",
            fingerprint="f",
            uid=i,
            created_at=now - timedelta(hours=2),
        )
    IdempotencyKey.objects.create(api=open_api, key="new", fingerprint="f", uid=9, created_at=now)
    assert trigger_services.idempotency_key_purge(batch_size=2, time_budget=0) == 2
    assert trigger_services.idempotency_key_purge(batch_size=2) == 3
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
